package tenet.ownership_test

import data.tenet.ownership

test_new_resource_without_owner_denied if {
	count(ownership.deny) == 1 with input as {"resources": [{"id": "x", "action": "create", "labels": {}}]}
}

test_owned_or_unchanged_allowed if {
	rs := [
		{"id": "a", "action": "create", "labels": {"owner": "team-a"}},
		{"id": "b", "action": "none", "labels": {}},
	]
	count(ownership.deny) == 0 with input as {"resources": rs}
}

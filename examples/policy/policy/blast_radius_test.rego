package tenet.blast_radius_test

import data.tenet.blast_radius

plan(n) := {"resources": [{"id": sprintf("r%d", [i]), "action": "delete"} | some i in numbers.range(1, n)]}

test_six_deletions_denied if {
	count(blast_radius.deny) == 1 with input as plan(6) with data.params as {"max_deletions": 5}
}

test_five_deletions_allowed if {
	count(blast_radius.deny) == 0 with input as plan(5) with data.params as {"max_deletions": 5}
}

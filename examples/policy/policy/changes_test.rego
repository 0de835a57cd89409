package tenet.changes_test

import data.tenet.changes

# 2026-12-05 is a Saturday; 2026-12-07 a Monday.
saturday_noon := time.parse_rfc3339_ns("2026-12-05T12:00:00Z")

monday_ten := time.parse_rfc3339_ns("2026-12-07T10:00:00Z")

run(env, ns) := {"manifest": {"vars": {"env": env}}, "run": {"time_ns": ns},
	"resources": [{"id": "a", "action": "update"}]}

test_prod_change_on_saturday_denied if {
	some v in changes.deny_window with input as run("prod", saturday_noon) with data.params as {}
	v.id == "CHG-001"
}

test_prod_change_on_monday_morning_allowed if {
	count(changes.deny_window) == 0 with input as run("prod", monday_ten) with data.params as {}
}

test_dev_any_time_allowed if {
	count(changes.deny_window) == 0 with input as run("dev", saturday_noon) with data.params as {}
}

package tenet.supply_chain_test

import data.tenet.supply_chain

test_unsigned_in_prod_denied if {
	inp := {"manifest": {"vars": {"env": "prod"}}, "providers": {"x": {"unsigned": false, "provenance": {"kind": "unsigned"}}}}
	count(supply_chain.deny_unsigned) == 1 with input as inp
}

test_builtin_in_prod_allowed if {
	inp := {"manifest": {"vars": {"env": "prod"}}, "providers": {"file": {"unsigned": false, "provenance": {"kind": "builtin"}}}}
	count(supply_chain.deny_unsigned) == 0 with input as inp
}

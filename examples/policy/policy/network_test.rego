package tenet.network_test

import data.tenet.network

conf(listen) := {"id": "pg", "type": "file.file", "action": "create",
	"desired": {"path": "/etc/postgresql/postgresql.conf", "content": sprintf("port = 5432\nlisten_addresses = '%s'\n", [listen])}}

test_all_addresses_denied if {
	some v in network.deny with input as {"resources": [conf("localhost,0.0.0.0")]} with data.params as {}
	v.id == "NET-001"
	v.path == "/content"
}

test_loopback_allowed if {
	count(network.deny) == 0 with input as {"resources": [conf("127.0.0.1")]} with data.params as {}
}

test_other_files_ignored if {
	r := object.union(conf("0.0.0.0"), {"desired": {"path": "/etc/motd", "content": "listen_addresses = '0.0.0.0'"}})
	count(network.deny) == 0 with input as {"resources": [r]} with data.params as {}
}

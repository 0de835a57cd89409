package tenet.encryption_test

import data.tenet.encryption

pg(content) := {"resources": [{"id": "pg", "type": "file.file", "action": "update",
	"desired": {"path": "/etc/postgresql/postgresql.conf", "content": content}}]}

test_ssl_off_denied if {
	some v in encryption.deny with input as pg("port = 5432\nssl = off\n")
	v.id == "ENC-001"
}

test_ssl_missing_denied if {
	count(encryption.deny) == 1 with input as pg("port = 5432\n")
}

test_ssl_on_allowed if {
	count(encryption.deny) == 0 with input as pg("ssl = on\n")
}

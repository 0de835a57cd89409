package tenet.capabilities_test

import data.tenet.capabilities

provider(exec, net) := {"providers": {"p": {"grants": {"exec": exec, "net": net, "fs": [], "env": []}}}}

test_shell_denied if {
	some v in capabilities.deny_shell with input as provider([{"program": "/bin/sh", "args": []}], [])
	v.id == "CAP-001"
	v.path == "/grants/exec/0/program"
}

test_specific_program_allowed if {
	count(capabilities.deny_shell) == 0 with input as provider([{"program": "/usr/bin/systemctl", "args": []}], [])
}

test_plain_http_denied_but_loopback_allowed if {
	nets := [
		{"pattern": "http://api.example.com", "scheme": "http", "host": "api.example.com", "port": 80},
		{"pattern": "http://localhost:8080", "scheme": "http", "host": "localhost", "port": 8080},
	]
	results := capabilities.deny_plain_http with input as provider([], nets)
	count(results) == 1
}

# Forbidden capabilities, judged at preflight (before any provider code runs).
package tenet.capabilities

interpreters := {"sh", "bash", "dash", "zsh", "ksh", "busybox", "env", "python3", "perl"}

basename(p) := regex.replace(p, `^.*/`, "")

deny_shell contains v if {
	some name, p in input.providers
	some i, g in p.grants.exec
	basename(g.program) in interpreters
	v := {"id": "CAP-001", "provider": name, "path": sprintf("/grants/exec/%d/program", [i]),
		"msg": sprintf("provider %s may run %s: grant the program itself, not an interpreter", [name, g.program])}
}

deny_plain_http contains v if {
	some name, p in input.providers
	some i, g in p.grants.net
	g.scheme != "https"
	not g.host in {"localhost", "127.0.0.1", "[::1]"}
	v := {"id": "CAP-002", "provider": name, "path": sprintf("/grants/net/%d", [i]),
		"msg": sprintf("provider %s may talk to %s over plain http", [name, g.pattern])}
}

# No database port exposed to every address: read from the rendered configuration.
package tenet.network

db_ports := object.get(data.params, ["network", "db_ports"], [1433, 3306, 5432, 6379, 27017])

public(addr) if addr in {"0.0.0.0", "*", "::", "[::]"}

deny contains v if {
	some r in input.resources
	r.type == "file.file"
	r.action in {"create", "update", "replace"}
	endswith(r.desired.path, "postgresql.conf")
	some line in split(r.desired.content, "\n")
	[_, addr] := regex.find_all_string_submatch_n(`^\s*listen_addresses\s*=\s*'([^']*)'`, line, 1)[0]
	some a in split(addr, ",")
	public(trim_space(a))
	v := {
		"id": "NET-001", "resource": r.id, "path": "/content",
		"msg": sprintf("%s makes PostgreSQL (port 5432) listen on %s: every address of the host", [r.id, trim_space(a)]),
	}
}

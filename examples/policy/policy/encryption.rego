# Encryption is mandatory: a PostgreSQL configuration must turn SSL on.
package tenet.encryption

deny contains v if {
	some r in input.resources
	r.type == "file.file"
	r.action in {"create", "update", "replace"}
	endswith(r.desired.path, "postgresql.conf")
	not ssl_on(r.desired.content)
	v := {"id": "ENC-001", "resource": r.id, "path": "/content",
		"msg": sprintf("%s must set `ssl = on`", [r.id])}
}

ssl_on(content) if {
	some line in split(content, "\n")
	regex.match(`^\s*ssl\s*=\s*(on|true|1)\s*$`, line)
}

# No unsigned provider in production: preflight sees `unsigned: true` in the manifest,
# the plan stage the verified provenance.
package tenet.supply_chain

deny_unsigned contains v if {
	input.manifest.vars.env == "prod"
	some name, p in input.providers
	unsigned(p)
	v := {"id": "SUP-001", "provider": name,
		"msg": sprintf("provider %s runs unsigned in prod", [name])}
}

unsigned(p) if p.unsigned

unsigned(p) if p.provenance.kind == "unsigned"

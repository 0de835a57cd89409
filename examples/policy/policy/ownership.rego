# Every resource Tenet creates names an owning team.
package tenet.ownership

deny contains v if {
	some r in input.resources
	r.action in {"create", "replace"}
	not r.labels.owner
	v := {"id": "OWN-001", "resource": r.id,
		"msg": sprintf("%s has no owner: add `labels: {owner: TEAM}`", [r.id])}
}

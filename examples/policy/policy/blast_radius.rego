# At most params.max_deletions deletions or replacements in one run.
package tenet.blast_radius

max_deletions := object.get(data.params, "max_deletions", 5)

destructive := [r.id | some r in input.resources; r.action in {"delete", "replace"}]

deny contains v if {
	count(destructive) > max_deletions
	v := {"id": "BLAST-001", "msg": sprintf("the plan deletes or replaces %d resources (limit %d): %s",
		[count(destructive), max_deletions, concat(", ", array.slice(destructive, 0, 10))])}
}

# Production changes only inside the change window (Mon–Fri, params.change_window hours).
package tenet.changes

tz := object.get(data.params, "timezone", "UTC")

from_hour := object.get(data.params, ["change_window", "from_hour"], 9)

to_hour := object.get(data.params, ["change_window", "to_hour"], 17)

in_window if {
	not time.weekday([input.run.time_ns, tz]) in {"Saturday", "Sunday"}
	[hour, _, _] := time.clock([input.run.time_ns, tz])
	hour >= from_hour
	hour < to_hour
}

changed := [r.id | some r in input.resources; r.action in {"create", "update", "replace", "delete"}]

deny_window contains v if {
	input.manifest.vars.env == "prod"
	count(changed) > 0
	not in_window
	v := {"id": "CHG-001", "msg": sprintf("%d change(s) to prod outside Mon-Fri %02d:00-%02d:00 %s", [count(changed), from_hour, to_hour, tz])}
}

# A conftest policy written for `terraform show -json`, used unchanged on Tenet's
# `resource_changes` view: deleting is worth a warning.
package main

warn contains msg if {
	some rc in input.resource_changes
	"delete" in rc.change.actions
	msg := sprintf("%s (%s) will be deleted", [rc.address, rc.type])
}

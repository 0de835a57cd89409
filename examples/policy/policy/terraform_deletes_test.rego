package main_test

import data.main

test_delete_warned if {
	rcs := [{"address": "a", "type": "file.file", "change": {"actions": ["delete"]}},
		{"address": "b", "type": "file.file", "change": {"actions": ["delete", "create"]}},
		{"address": "c", "type": "file.file", "change": {"actions": ["no-op"]}}]
	count(main.warn) == 2 with input as {"resource_changes": rcs}
}

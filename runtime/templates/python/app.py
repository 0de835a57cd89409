"""{{name}}: a Tenet provider in Python. Kind `note`: a text file at `path` holding `text`.

Build: `tenet provider build` (componentize-py, world `provider-core`). Test against the
provider contract: `tenet provider test {{name}}.wasm`. Only `raise Err(...)` becomes a
WIT error; any other exception traps the call, so catch OSError.
"""

import json
import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import capabilities
from wit_world.imports import tenet_provider_types as types

SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "minLength": 1, "description": "the note's file"},
        "text": {"type": "string", "description": "what the note says"},
    },
    "required": ["path", "text"],
    "additionalProperties": False,
}


def read_note(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Err(types.Error_CapabilityDenied(f"cannot read {path}: {e}"))


class Resources(exports.Resources):
    def describe(self):
        kind = types.KindInfo(
            name="note",
            description="a text file holding a note",
            schema=json.dumps(SCHEMA),
            identity="path",
            force_new=[],
            path_properties=["path"],
        )
        return types.ProviderInfo(name="{{name}}", version="0.1.0", description="notes in text files", kinds=[kind])

    def validate(self, kind, properties):
        return []

    def read(self, kind, properties):
        path = json.loads(properties)["path"]
        text = read_note(path)
        return None if text is None else json.dumps({"path": path, "text": text})

    def diff(self, kind, desired, current):
        want = json.loads(desired)
        if current is None:
            return types.DiffResult(types.Action.CREATE, [types.FieldChange("/text", None, json.dumps(want["text"]), False)])
        have = json.loads(current)
        if have["text"] == want["text"]:
            return types.DiffResult(types.Action.NONE, [])
        return types.DiffResult(types.Action.UPDATE, [
            types.FieldChange("/text", json.dumps(have["text"]), json.dumps(want["text"]), False)
        ])

    def apply(self, kind, desired, current):
        want = json.loads(desired)
        try:
            with open(want["path"], "w", encoding="utf-8") as f:
                f.write(want["text"])
        except OSError as e:
            raise Err(types.Error_CapabilityDenied(f"cannot write {want['path']}: {e}"))
        return self.read(kind, desired)

    def delete(self, kind, current):
        path = json.loads(current)["path"]
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise Err(types.Error_CapabilityDenied(f"cannot remove {path}: {e}"))


class Capabilities(exports.Capabilities):
    def requested(self):
        return capabilities.CapabilityRequest(directories=[], programs=[], hosts=[], env=[])

"""A Tenet provider, in Python: keys in INI files.

Kind `file` manages the keys a manifest declares in one INI file (`path`), section by
section; keys it does not declare, comments, blank lines and ordering are left as they
are. A key whose value is `null` must be absent. Built with componentize-py against the
`provider-core` world in `wit/` (see README.md).
"""

import json
import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import fs_ext, log
from wit_world.imports import tenet_provider_types as types
from wit_world.exports import capabilities

NAME = "ini"
VERSION = "0.1.0"

SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "the INI file"},
        "sections": {
            "type": "object",
            "description": "section -> key -> value (a string, or null for absent)",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": {"type": ["string", "null"]},
            },
        },
        "mode": {"type": "string", "pattern": "^0?[0-7]{3}$", "description": "mode of a file created"},
    },
    "required": ["path", "sections"],
    "additionalProperties": False,
}


def fail(case, message):
    """Raise a WIT error (any other exception would trap the component)."""
    raise Err(case(message))


def parse(text):
    """Lines of an INI file as (kind, section, key, line) tuples, kind in
    'section' | 'key' | 'other'; keys before any section belong to section ''."""
    out = []
    section = ""
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip()
            out.append(("section", section, None, line))
        elif stripped and stripped[0] not in "#;" and "=" in stripped:
            key = stripped.split("=", 1)[0].strip()
            out.append(("key", section, key, line))
        else:
            out.append(("other", section, None, line))
    return out


def value_of(line):
    return line.split("=", 1)[1].strip()  # strip() also drops a CRLF's \r


def current_values(lines, sections):
    """The declared keys' current values (None when absent)."""
    found = {}
    for kind, section, key, line in lines:
        if kind == "key" and key in sections.get(section, {}):
            found.setdefault(section, {})[key] = value_of(line)
    return {s: {k: found.get(s, {}).get(k) for k in keys} for s, keys in sections.items()}


def edit(lines, sections):
    """The file's new text: declared keys set or removed, everything else kept. A key
    that appears more than once in its section is written once (where it first was): the
    file then says one thing."""
    pending = {s: dict(keys) for s, keys in sections.items()}
    declared = {s: dict(keys) for s, keys in sections.items()}
    out = []
    section_of_last = {}
    for kind, section, key, line in lines:
        if kind == "key" and key in declared.get(section, {}):
            if key in pending.get(section, {}):
                value = pending[section].pop(key)
                if value is not None:
                    out.append(f"{key} = {value}{eol(line)}")
            # Later copies of a declared key are dropped.
        else:
            out.append(line)
        if kind != "other":
            section_of_last[section] = len(out)
    newline = eol(lines[0][3]) if lines else "\n"
    # Keys still pending go at the end of their section, or a new section at the end.
    inserts = []
    for section, keys in pending.items():
        new = [f"{k} = {v}{newline}" for k, v in keys.items() if v is not None]
        if not new:
            continue
        if section in section_of_last:
            inserts.append((section_of_last[section], new))
        elif not section:
            # Keys outside any section must come before the first section.
            inserts.append((0, new + ([newline] if out else [])))
        else:
            terminate(out, newline)
            if out and out[-1].strip():
                out.append(newline)
            out.append(f"[{section}]{newline}")
            out.extend(new)
    for at, new in sorted(inserts, key=lambda x: -x[0]):
        if at > 0 and not out[at - 1].endswith("\n"):
            out[at - 1] += newline
        out[at:at] = new
    return "".join(out)


def eol(line):
    """The line ending a file uses (CRLF files stay CRLF)."""
    return "\r\n" if line.endswith("\r\n") else "\n"


def terminate(out, newline):
    if out and not out[-1].endswith("\n"):
        out[-1] += newline


def load(path):
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except PermissionError as e:
        fail(types.Error_CapabilityDenied, f"cannot read {path}: {e}")
    except OSError as e:
        fail(types.Error_Internal, f"cannot read {path}: {e}")


def write(path, text, existing, mode):
    """Replace `path` atomically: a temporary file beside it (with the original's mode and
    owner, or `mode` for a new file), fsync, rename; the temporary file never stays."""
    tmp = f"{path}.tenet-tmp"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if existing:
            st = fs_ext.stat(path)
            if st is not None:
                fs_ext.chmod(tmp, st.mode & 0o7777)
                fs_ext.chown(tmp, st.uid, st.gid)
        elif mode is not None:
            fs_ext.chmod(tmp, int(mode, 8))
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, Err):
            fail(types.Error_CapabilityDenied, f"cannot set the mode or owner of {path}: {e.value}")
        if isinstance(e, PermissionError):
            fail(types.Error_CapabilityDenied, f"cannot write {path}: {e}")
        if isinstance(e, OSError):
            fail(types.Error_Internal, f"cannot write {path}: {e}")
        raise


def state(props):
    """The declared keys as they are; None when the file or every declared key is absent
    (the resource is the set of keys, not the file)."""
    text = load(props["path"])
    if text is None:
        return None
    values = current_values(parse(text), props["sections"])
    if all(v is None for keys in values.values() for v in keys.values()):
        return None
    return {"path": props["path"], "sections": values}


def props_of(text):
    try:
        return json.loads(text)
    except ValueError as e:
        fail(types.Error_InvalidInput, f"properties are not JSON: {e}")


class Resources(exports.Resources):
    def describe(self):
        kind = types.KindInfo(
            name="file",
            description="keys in an INI file (other keys, comments and order are kept)",
            schema=json.dumps(SCHEMA),
            identity="path",
            force_new=[],
            path_properties=["path"],
        )
        return types.ProviderInfo(
            name=NAME,
            version=VERSION,
            description="INI files, written in Python",
            kinds=[kind],
        )

    def validate(self, kind, properties):
        out = []
        props = json.loads(properties)
        for section, keys in props.get("sections", {}).items():
            if any(c in section for c in "[]\r\n") or section != section.strip():
                out.append(types.Diagnostic(types.Severity.ERROR, f"/sections/{section}", "a section name cannot contain [, ] or a newline, or start/end with spaces"))
            for key, value in keys.items():
                if not key or any(c in key for c in "=\r\n[];#") or key != key.strip():
                    out.append(types.Diagnostic(types.Severity.ERROR, f"/sections/{section}/{key}", "a key cannot be empty, contain = ; # [ ] or a newline, or start/end with spaces"))
                if isinstance(value, str) and ("\n" in value or "\r" in value or value != value.strip()):
                    out.append(types.Diagnostic(types.Severity.ERROR, f"/sections/{section}/{key}", "a value cannot contain a newline or start/end with spaces"))
        return out

    def read(self, kind, properties):
        s = state(props_of(properties))
        return None if s is None else json.dumps(s)

    def diff(self, kind, desired, current):
        want = props_of(desired)
        if current is None:
            if all(v is None for keys in want["sections"].values() for v in keys.values()):
                # Only absent keys declared, and none there: nothing to do.
                return types.DiffResult(types.Action.NONE, [])
            return types.DiffResult(types.Action.CREATE, [
                types.FieldChange(f"/sections/{s}/{k}", None, json.dumps(v), False)
                for s, keys in want["sections"].items() for k, v in keys.items() if v is not None
            ])
        have = props_of(current)
        changes = []
        for s, keys in want["sections"].items():
            for k, v in keys.items():
                before = have.get("sections", {}).get(s, {}).get(k)
                if before != v:
                    changes.append(types.FieldChange(
                        f"/sections/{s}/{k}",
                        None if before is None else json.dumps(before),
                        None if v is None else json.dumps(v),
                        False,
                    ))
        return types.DiffResult(types.Action.UPDATE if changes else types.Action.NONE, changes)

    def apply(self, kind, desired, current):
        props = props_of(desired)
        path = props["path"]
        text = load(path)
        new = edit(parse(text or ""), props["sections"])
        if new != text:
            write(path, new, existing=text is not None, mode=props.get("mode"))
            log.log(log.Level.INFO, f"wrote {path}")
        return json.dumps(state(props))

    def delete(self, kind, current):
        # Deleting the resource removes the keys it manages, not the file.
        props = props_of(current)
        cleared = {s: {k: None for k in keys} for s, keys in props["sections"].items()}
        self.apply(kind, json.dumps({"path": props["path"], "sections": cleared}), current)


class Capabilities(exports.Capabilities):
    def requested(self):
        return capabilities.CapabilityRequest(directories=[], programs=[], hosts=[], env=[])

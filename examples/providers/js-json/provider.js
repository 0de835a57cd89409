// A Tenet provider, in JavaScript: values at JSON-pointer paths inside JSON documents.
//
// Kind `document` manages the values a manifest declares in one JSON file (`path`):
// `values` maps JSON pointers (RFC 6901, e.g. `/server/port`) to the value each must
// hold (`null` in `absent` pointers removes them). Everything else in the document is
// kept. Built with `jco componentize --backend quickjs` against the `provider-core` world
// in `wit/` (see README.md); files are read and written through WASI, inside the
// directories the manifest grants.

import { log } from 'tenet:host/log@0.1.1';
import { stat, chmod, chown } from 'tenet:host/fs-ext@0.1.1';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

const SCHEMA = {
  type: 'object',
  properties: {
    path: { type: 'string', description: 'the JSON document' },
    values: {
      type: 'object',
      description: 'JSON pointer -> the value it must hold',
      propertyNames: { pattern: '^(/([^~]|~[01])*)+$' },
    },
    absent: {
      type: 'array',
      description: 'JSON pointers that must not exist',
      items: { type: 'string', pattern: '^(/([^~]|~[01])*)+$' },
    },
    indent: { type: 'integer', minimum: 0, maximum: 8, description: 'indentation of a document written' },
  },
  required: ['path', 'values'],
  additionalProperties: false,
};

const fail = (tag, message) => {
  throw { tag, val: message };
};

// --- UTF-8 (QuickJS has no TextEncoder in this runtime) ---
function encode(s) {
  const out = [];
  for (const ch of s) {
    let c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

function decode(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    let c, n;
    if (b < 0x80) { c = b; n = 1; }
    else if (b < 0xe0) { c = b & 31; n = 2; }
    else if (b < 0xf0) { c = b & 15; n = 3; }
    else { c = b & 7; n = 4; }
    for (let k = 1; k < n; k++) c = (c << 6) | (bytes[i + k] & 63);
    s += String.fromCodePoint(c);
    i += n;
  }
  return s;
}

// --- files, through the preopened (granted) directories ---
const errorCode = (e) => (e && (e.payload ?? e.val ?? e.tag)) || String(e);

function locate(path) {
  let best = null;
  for (const [dir, at] of getDirectories()) {
    const prefix = at.endsWith('/') ? at : at + '/';
    if ((path.startsWith(prefix) || path === at) && (!best || at.length > best[1].length)) best = [dir, at];
  }
  if (!best) fail('capability-denied', `${path} is outside every granted directory`);
  return [best[0], path.slice(best[1].length).replace(/^\/+/, '')];
}

function readText(path) {
  const [dir, rel] = locate(path);
  let file;
  try {
    file = dir.openAt({ symlinkFollow: false }, rel, {}, { read: true });
  } catch (e) {
    if (errorCode(e) === 'no-entry') return null;
    fail('capability-denied', `cannot open ${path}: ${errorCode(e)}`);
  }
  const chunks = [];
  let offset = 0; // u64 is a number in this runtime
  for (;;) {
    const [data, end] = file.read(65536, offset);
    for (let i = 0; i < data.length; i++) chunks.push(data[i]); // no spread: argument limits
    offset += data.length;
    if (end || data.length === 0) break;
  }
  try {
    return decode(chunks);
  } catch (e) {
    fail('conflict', `${path} is not UTF-8 text`);
  }
}

// Replace `path` atomically: a temporary file beside it with the original's mode and
// owner, synced, renamed over it; the temporary file never stays behind.
function writeText(path, text) {
  const [dir, rel] = locate(path);
  const tmp = rel + '.tenet-tmp';
  try {
    const file = dir.openAt({ symlinkFollow: false }, tmp, { create: true, truncate: true }, { write: true });
    const bytes = encode(text);
    let offset = 0;
    while (offset < bytes.length) {
      const n = file.write(bytes.subarray(offset), offset);
      offset += Number(n);
    }
    file.syncData();
    const before = stat(path);
    if (before) {
      chmod(path + '.tenet-tmp', before.mode & 0o7777);
      chown(path + '.tenet-tmp', before.uid, before.gid);
    }
    dir.renameAt(tmp, dir, rel);
  } catch (e) {
    try {
      dir.unlinkFileAt(tmp);
    } catch (_) {
      // already gone
    }
    if (e && e.tag) throw e;
    fail('capability-denied', `cannot write ${path}: ${errorCode(e)}`);
  }
}

// --- JSON pointers ---
const tokens = (pointer) => pointer.split('/').slice(1).map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));

function get(doc, pointer) {
  let node = doc;
  for (const t of tokens(pointer)) {
    if (node === null || typeof node !== 'object' || !Object.prototype.hasOwnProperty.call(node, t)) return undefined;
    node = node[t];
  }
  return node;
}

// Only object members are addressed: array items move when others are added or removed,
// so a pointer into an array would not name one thing from run to run.
function walkable(node, t, pointer) {
  if (Array.isArray(node)) fail('conflict', `${pointer}: \`${t}\` is inside an array; only object members can be managed`);
  if (t === '__proto__' || t === 'constructor' || t === 'prototype') fail('invalid-input', `${pointer}: \`${t}\` cannot be managed`);
}

function set(doc, pointer, value) {
  const ts = tokens(pointer);
  let node = doc;
  for (const t of ts.slice(0, -1)) {
    walkable(node, t, pointer);
    if (node[t] === undefined) node[t] = {};
    else if (node[t] === null || typeof node[t] !== 'object') {
      fail('conflict', `${pointer}: \`${t}\` holds ${JSON.stringify(node[t])}, not an object`);
    }
    node = node[t];
  }
  walkable(node, ts[ts.length - 1], pointer);
  node[ts[ts.length - 1]] = value;
}

function remove(doc, pointer) {
  const ts = tokens(pointer);
  let node = doc;
  for (const t of ts.slice(0, -1)) {
    if (node === null || typeof node !== 'object' || Array.isArray(node) || !Object.prototype.hasOwnProperty.call(node, t)) return;
    node = node[t];
  }
  const last = ts[ts.length - 1];
  walkable(node, last, pointer);
  if (node !== null && typeof node === 'object') delete node[last];
}

const canonical = (v) =>
  v === null || typeof v !== 'object'
    ? JSON.stringify(v)
    : Array.isArray(v)
      ? `[${v.map(canonical).join(',')}]`
      : `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;

function parseDoc(path, text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    fail('conflict', `${path} is not JSON: ${e.message}`);
  }
}

function state(props) {
  const text = readText(props.path);
  if (text === null) return null;
  const doc = parseDoc(props.path, text);
  const values = {};
  for (const p of Object.keys(props.values)) {
    const v = get(doc, p);
    values[p] = v === undefined ? null : v;
  }
  // The resource is the set of values, not the document: none there, nothing there.
  if (Object.keys(values).length && Object.values(values).every((v) => v === null)) return null;
  const absent = (props.absent || []).filter((p) => get(doc, p) === undefined);
  const out = { path: props.path, values };
  if (props.absent) out.absent = absent;
  return out;
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    fail('invalid-input', `properties are not JSON: ${e.message}`);
  }
}

export const resources = {
  describe() {
    return {
      name: 'json',
      version: '0.1.0',
      description: 'values inside JSON documents, written in JavaScript',
      kinds: [
        {
          name: 'document',
          description: 'values at JSON pointers in a JSON file (everything else is kept)',
          schema: JSON.stringify(SCHEMA),
          identity: 'path',
          forceNew: [],
          pathProperties: ['path'],
        },
      ],
    };
  },

  validate(kind, properties) {
    const props = JSON.parse(properties);
    const out = [];
    for (const p of props.absent || []) {
      if (Object.prototype.hasOwnProperty.call(props.values || {}, p)) {
        out.push({ severity: 'error', path: '/absent', message: `${p} cannot be both set and absent` });
      }
    }
    return out;
  },

  read(kind, properties) {
    const s = state(parse(properties));
    return s === null ? null : JSON.stringify(s);
  },

  diff(kind, desired, current) {
    const want = parse(desired);
    const have = current === null ? null : parse(current);
    const changes = [];
    const esc = (p) => p.replace(/~/g, '~0').replace(/\//g, '~1');
    for (const [p, v] of Object.entries(want.values)) {
      const before = have ? have.values[p] ?? null : null;
      if (have === null || canonical(before) !== canonical(v)) {
        changes.push({
          path: `/values/${esc(p)}`,
          before: have === null || before === null ? null : JSON.stringify(before),
          after: JSON.stringify(v),
          forcesReplacement: false,
        });
      }
    }
    for (const p of want.absent || []) {
      if (have && !(have.absent || []).includes(p)) {
        changes.push({ path: `/absent`, before: null, after: JSON.stringify(p), forcesReplacement: false });
      }
    }
    const action = have === null ? 'create' : changes.length ? 'update' : 'none';
    return { action, changes };
  },

  apply(kind, desired, current) {
    const props = parse(desired);
    const text = readText(props.path);
    const doc = text === null ? {} : parseDoc(props.path, text);
    for (const [p, v] of Object.entries(props.values)) set(doc, p, v);
    for (const p of props.absent || []) remove(doc, p);
    const indent = props.indent ?? 2;
    const next = JSON.stringify(doc, null, indent) + '\n';
    if (next !== text) {
      writeText(props.path, next);
      log('info', `wrote ${props.path}`);
    }
    return JSON.stringify(state(props));
  },

  delete(kind, current) {
    // Deleting the resource removes the values it manages, not the document.
    const props = parse(current);
    const text = readText(props.path);
    if (text === null) return;
    const doc = parseDoc(props.path, text);
    for (const p of Object.keys(props.values)) remove(doc, p);
    writeText(props.path, JSON.stringify(doc, null, 2) + '\n');
  },
};

export const capabilities = {
  requested() {
    return { directories: [], programs: [], hosts: [], env: [] };
  },
};

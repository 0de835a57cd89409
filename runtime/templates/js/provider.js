// {{name}}: a Tenet provider in JavaScript. Kind `note`: a text file at `path` holding
// `text`.
//
// Build: `tenet provider build` (jco componentize, QuickJS backend, world `provider-core`).
// Test against the provider contract: `tenet provider test {{name}}.wasm`. A thrown
// `{tag, val}` becomes the WIT error variant; files are reached through the WASI
// preopens (the directories the manifest grants).

import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

const SCHEMA = {
  type: 'object',
  properties: {
    path: { type: 'string', minLength: 1, description: "the note's file" },
    text: { type: 'string', description: 'what the note says' },
  },
  required: ['path', 'text'],
  additionalProperties: false,
};

const fail = (tag, val) => {
  throw { tag, val };
};
const code = (e) => (e && (e.payload ?? e.val ?? e.tag)) || String(e);

// The preopened directory holding `path`, and the path inside it.
function locate(path) {
  let best = null;
  for (const [dir, at] of getDirectories()) {
    const prefix = at.endsWith('/') ? at : at + '/';
    if (path.startsWith(prefix) && (!best || at.length > best[1].length)) best = [dir, at];
  }
  if (!best) fail('capability-denied', `${path} is outside every granted directory`);
  return [best[0], path.slice(best[1].length).replace(/^\/+/, '')];
}

// UTF-8 (this runtime has no TextEncoder).
function encode(s) {
  const out = [];
  for (const ch of s) {
    const c = ch.codePointAt(0);
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
    const n = b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
    let c = n === 1 ? b : b & (0xff >> (n + 1));
    for (let k = 1; k < n; k++) c = (c << 6) | (bytes[i + k] & 63);
    s += String.fromCodePoint(c);
    i += n;
  }
  return s;
}

function readNote(path) {
  const [dir, rel] = locate(path);
  let file;
  try {
    file = dir.openAt({}, rel, {}, { read: true });
  } catch (e) {
    if (code(e) === 'no-entry') return null;
    fail('capability-denied', `cannot open ${path}: ${code(e)}`);
  }
  const bytes = [];
  for (let offset = 0; ; ) {
    const [data, end] = file.read(65536, offset);
    for (let i = 0; i < data.length; i++) bytes.push(data[i]); // no spread: argument limits
    offset += data.length;
    if (end || data.length === 0) break;
  }
  return decode(bytes);
}

function writeNote(path, text) {
  const [dir, rel] = locate(path);
  try {
    const file = dir.openAt({}, rel, { create: true, truncate: true }, { write: true });
    const bytes = encode(text);
    for (let offset = 0; offset < bytes.length; ) offset += Number(file.write(bytes.subarray(offset), offset));
  } catch (e) {
    fail('capability-denied', `cannot write ${path}: ${code(e)}`);
  }
}

export const resources = {
  describe() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      description: 'notes in text files',
      kinds: [
        {
          name: 'note',
          description: 'a text file holding a note',
          schema: JSON.stringify(SCHEMA),
          identity: 'path',
          forceNew: [],
          pathProperties: ['path'],
        },
      ],
    };
  },
  validate() {
    return [];
  },
  read(kind, properties) {
    const { path } = JSON.parse(properties);
    const text = readNote(path);
    return text === null ? null : JSON.stringify({ path, text });
  },
  diff(kind, desired, current) {
    const want = JSON.parse(desired);
    if (current === null) {
      return { action: 'create', changes: [{ path: '/text', before: null, after: JSON.stringify(want.text), forcesReplacement: false }] };
    }
    const have = JSON.parse(current);
    if (have.text === want.text) return { action: 'none', changes: [] };
    return {
      action: 'update',
      changes: [{ path: '/text', before: JSON.stringify(have.text), after: JSON.stringify(want.text), forcesReplacement: false }],
    };
  },
  apply(kind, desired) {
    const want = JSON.parse(desired);
    writeNote(want.path, want.text);
    return resources.read(kind, desired); // not `this`: the runtime calls exports unbound
  },
  delete(kind, current) {
    const { path } = JSON.parse(current);
    const [dir, rel] = locate(path);
    try {
      dir.unlinkFileAt(rel);
    } catch (e) {
      if (code(e) !== 'no-entry') fail('capability-denied', `cannot remove ${path}: ${code(e)}`);
    }
  },
};

export const capabilities = {
  requested() {
    return { directories: [], programs: [], hosts: [], env: [] };
  },
};

// Changes to a pipeline spec made by a form, applied to the document as its author wrote it:
// a YAML spec keeps its comments, order and layout, and only the new lines are added, so the
// review diff shows exactly what the form did.

/** `text` (the spec, JSON or YAML) with `destination` appended to its destinations. */
export function addDestination(text, destination) {
  if (text.trimStart().startsWith('{')) {
    const spec = JSON.parse(text);
    spec.destinations = [...(spec.destinations || []), destination];
    return `${JSON.stringify(spec, null, 2)}\n`;
  }
  const lines = text.replace(/\n+$/, '').split('\n');
  const at = lines.findIndex((l) => /^destinations\s*:/.test(l));
  if (at < 0) {
    return `${[...lines, 'destinations:', ...yamlItem(destination, '  ')].join('\n')}\n`;
  }
  const rest = lines[at].replace(/^destinations\s*:\s*/, '');
  if (/^\[\s*\]\s*(#.*)?$/.test(rest)) {
    lines.splice(at, 1, 'destinations:', ...yamlItem(destination, '  '));
    return `${lines.join('\n')}\n`;
  }
  if (rest !== '' && !rest.startsWith('#')) {
    throw new Error('The spec writes its destinations on one line ([…]); add this one in the editor, or write the list one item per line.');
  }
  // The block's items: from the line after the key to the last line that belongs to it.
  let indent = null;
  let last = at;
  for (let i = at + 1; i < lines.length; i += 1) {
    const line = lines[i];
    if (/^\s*(#.*)?$/.test(line)) continue;
    const lead = line.match(/^ */)[0].length;
    if (indent === null) {
      if (!/^ *- /.test(line) && !/^ *-$/.test(line)) break;
      indent = lead;
    }
    // A line at the key's own level ends the block, unless it is an item written at
    // column 0 (YAML allows `- name: …` right under the key).
    if (lead === 0 && !(indent === 0 && line.startsWith('-'))) break;
    if (lead < indent) break;
    last = i;
  }
  lines.splice(last + 1, 0, ...yamlItem(destination, ' '.repeat(indent ?? 2)));
  return `${lines.join('\n')}\n`;
}

/** `wanted`, or `wanted-2`, `wanted-3`… when a destination already has that name. */
export function uniqueName(wanted, taken) {
  if (!taken.includes(wanted)) return wanted;
  for (let n = 2; ; n += 1) if (!taken.includes(`${wanted}-${n}`)) return `${wanted}-${n}`;
}

/** One sequence item: `- key: value` then the other keys under it. */
function yamlItem(object, pad) {
  const body = yamlMap(object, `${pad}  `);
  body[0] = `${pad}- ${body[0].slice(pad.length + 2)}`;
  return body;
}

function yamlMap(object, pad) {
  const out = [];
  for (const [key, value] of Object.entries(object)) {
    if (value && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length > 0) {
      out.push(`${pad}${yamlKey(key)}:`, ...yamlMap(value, `${pad}  `));
    } else {
      out.push(`${pad}${yamlKey(key)}: ${yamlScalar(value)}`);
    }
  }
  return out;
}

const yamlKey = (key) => (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(key) ? key : JSON.stringify(key));

// A JSON string is a YAML double-quoted scalar, so quoting every string says exactly what it
// is (no `on`, `no` or `1e3` read as something else).
const yamlScalar = (value) => JSON.stringify(value);

// Line diff of two texts (longest common subsequence), and finding where a spec path sits in
// the editor's text so a validation error can point at its line.

/** [op, line] pairs: '=' kept, '-' only in `a`, '+' only in `b`. */
export function lineDiff(a, b) {
  const x = a.replace(/\n$/, '').split('\n');
  const y = b.replace(/\n$/, '').split('\n');
  const n = x.length;
  const m = y.length;
  // lcs[i][j]: length of the longest common subsequence of x[i..] and y[j..].
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push(['=', x[i]]); i++; j++; } else if (lcs[i + 1][j] >= lcs[i][j + 1]) { out.push(['-', x[i++]]); } else { out.push(['+', y[j++]]); }
  }
  while (i < n) out.push(['-', x[i++]]);
  while (j < m) out.push(['+', y[j++]]);
  return out;
}

/**
 * The 1-based line where `path` (`destinations[1].webhook.url`) is written in `text` (JSON or
 * YAML), or null. Walks the path's keys in order, each searched after the previous one's line;
 * an index `[n]` skips to the n-th item of the list that follows.
 */
export function lineOfPath(text, path) {
  if (!path) return null;
  const lines = text.split('\n');
  const segments = path.match(/[^.[\]]+|\[\d+\]/g) || [];
  let at = 0;
  let found = null;
  for (const segment of segments) {
    const index = segment.match(/^\[(\d+)\]$/);
    if (index) {
      // Items of a list start with `{` (JSON) or `- ` (YAML) at one indentation.
      let seen = -1;
      let indent = null;
      for (let i = at; i < lines.length; i++) {
        const m = lines[i].match(/^(\s*)(- |\{)/);
        if (!m) continue;
        if (indent === null) indent = m[1].length;
        if (m[1].length !== indent) continue;
        if (++seen === Number(index[1])) { at = i; found = i + 1; break; }
      }
      continue;
    }
    const key = segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const pattern = new RegExp(`(^|[\\s{,-])"?${key}"?\\s*:`);
    let hit = false;
    for (let i = at; i < lines.length; i++) {
      if (pattern.test(lines[i])) { at = i; found = i + 1; hit = true; break; }
    }
    if (!hit) break;
  }
  return found;
}

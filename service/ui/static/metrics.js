// A few figures from the Prometheus text of /metrics: samples by name and labels, and quantiles of a histogram.

export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    if (match[3]) for (const m of match[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]] = m[2].replace(/\\(.)/g, "$1");
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

export function sum(samples, name, where = () => true) {
  return samples.filter((s) => s.name === name && where(s.labels)).reduce((total, s) => total + s.value, 0);
}

export function byLabel(samples, name, label) {
  const out = {};
  for (const s of samples) if (s.name === name) out[s.labels[label]] = (out[s.labels[label]] || 0) + s.value;
  return out;
}

// Cumulative buckets {le: count} (summed over the series `where` picks), as Prometheus' histogram_quantile does:
// linear within the bucket the rank falls in.
export function buckets(samples, name, where = () => true) {
  const counts = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || !where(s.labels)) continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    counts.set(le, (counts.get(le) || 0) + s.value);
  }
  return [...counts.entries()].sort((a, b) => a[0] - b[0]);
}

export function quantile(q, cumulative) {
  if (!cumulative.length) return null;
  const total = cumulative[cumulative.length - 1][1];
  if (!total) return null;
  const rank = q * total;
  let [prevLe, prevCount] = [0, 0];
  for (const [le, count] of cumulative) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      const inBucket = count - prevCount;
      return prevLe + (le - prevLe) * (inBucket ? (rank - prevCount) / inBucket : 0);
    }
    [prevLe, prevCount] = [le, count];
  }
  return prevLe;
}

// Differences between two cumulative bucket lists (the searches of the last interval only).
export function delta(now, before) {
  const old = new Map(before);
  return now.map(([le, count]) => [le, count - (old.get(le) || 0)]);
}

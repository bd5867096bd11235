// A small store-only ZIP writer (no compression: the photos are JPEG/PNG already) with CRC-32,
// UTF-8 names and no dependencies. Enough for the corrections download; read back by Python's zipfile.

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xEDB88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (the ZIP / PNG polynomial) of bytes. */
export function crc32(bytes) {
  let c = 0xFFFFFFFF;
  for (let i = 0; i < bytes.length; i += 1) c = CRC_TABLE[(c ^ bytes[i]) & 0xFF] ^ (c >>> 8);
  return (c ^ 0xFFFFFFFF) >>> 0;
}

function dosTime(date) {
  const year = Math.max(1980, date.getFullYear());
  return {
    time: (date.getHours() << 11) | (date.getMinutes() << 5) | (date.getSeconds() >> 1),
    date: ((year - 1980) << 9) | ((date.getMonth() + 1) << 5) | date.getDate(),
  };
}

/**
 * files: [{name: 'defect/a.jpg', bytes: Uint8Array}] -> the ZIP archive as a Uint8Array.
 * Stored (method 0), UTF-8 flag set, one timestamp for every member. Limited to < 4 GiB and 65535 files.
 */
export function zipStore(files, date = new Date()) {
  const enc = new TextEncoder();
  const { time, date: day } = dosTime(date);
  const entries = files.map((f) => ({ name: enc.encode(f.name), bytes: f.bytes, crc: crc32(f.bytes) }));
  const localSize = entries.reduce((s, e) => s + 30 + e.name.length + e.bytes.length, 0);
  const centralSize = entries.reduce((s, e) => s + 46 + e.name.length, 0);
  if (entries.length > 0xFFFF || localSize + centralSize > 0xFFFFFFFF) throw new Error('too much for a ZIP32 archive');
  const out = new Uint8Array(localSize + centralSize + 22);
  const view = new DataView(out.buffer);
  let p = 0;
  const u16 = (v) => { view.setUint16(p, v, true); p += 2; };
  const u32 = (v) => { view.setUint32(p, v >>> 0, true); p += 4; };
  const offsets = [];
  for (const e of entries) {
    offsets.push(p);
    u32(0x04034B50); u16(20); u16(0x0800); u16(0); u16(time); u16(day);
    u32(e.crc); u32(e.bytes.length); u32(e.bytes.length); u16(e.name.length); u16(0);
    out.set(e.name, p); p += e.name.length;
    out.set(e.bytes, p); p += e.bytes.length;
  }
  const central = p;
  entries.forEach((e, i) => {
    u32(0x02014B50); u16(20); u16(20); u16(0x0800); u16(0); u16(time); u16(day);
    u32(e.crc); u32(e.bytes.length); u32(e.bytes.length); u16(e.name.length); u16(0); u16(0);
    u16(0); u16(0); u32(0); u32(offsets[i]);
    out.set(e.name, p); p += e.name.length;
  });
  const centralBytes = p - central;
  u32(0x06054B50); u16(0); u16(0); u16(entries.length); u16(entries.length);
  u32(centralBytes); u32(central); u16(0);
  return out;
}

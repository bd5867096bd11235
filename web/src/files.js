// Files the page writes and reads: downloads, names inside the corrections zip, a photo's SHA-256.

export const stamp = () => new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-');

export function download(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

/** A file name safe inside the zip's class folder (no folders, no control characters), unique per folder. */
export function zipName(name, taken) {
  const clean = (name.replace(/[\\/\u0000-\u001f]/g, '_').replace(/^\.+/, '_') || 'photo').slice(0, 200);
  let out = clean;
  const dot = clean.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [clean.slice(0, dot), clean.slice(dot)] : [clean, ''];
  for (let k = 2; taken.has(out); k += 1) out = `${stem}-${k}${ext}`;
  taken.add(out);
  return out;
}

/** SHA-256 of a file's bytes (hex): the same photo added twice is flagged, and counted once. */
export async function sha256(blob) {
  try {
    const hash = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
    return Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, '0')).join('');
  } catch (err) {
    return null;   // no WebCrypto (plain http from another machine): no duplicate check
  }
}

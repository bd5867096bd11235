// Original photos of the parts that need action or were corrected, in IndexedDB (they are too big for
// localStorage), so the corrections zip still has them after a reload. Cleared with Clear.
let dbPromise = null;
function db() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve) => {
      if (!globalThis.indexedDB) { resolve(null); return; }
      const req = indexedDB.open('casting-inspector', 1);
      req.onupgradeneeded = () => req.result.createObjectStore('photos');
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => resolve(null);
    });
  }
  return dbPromise;
}

async function idb(mode, fn) {
  const d = await db();
  if (!d) return null;
  return new Promise((resolve) => {
    const tx = d.transaction('photos', mode);
    const req = fn(tx.objectStore('photos'));
    tx.oncomplete = () => resolve(req.result ?? null);
    tx.onerror = tx.onabort = () => resolve(null);
  });
}
export const keepPhoto = (id, blob) => idb('readwrite', (s) => s.put(blob, id)).catch(() => null);
export const loadPhoto = (id) => idb('readonly', (s) => s.get(id)).catch(() => null);
export const clearPhotos = () => idb('readwrite', (s) => s.clear()).catch(() => null);

// Image preparation shared by the page and the Node parity check. Pure functions, no TF.js.
//
// The model's input contract (models/metadata.json "input"): 8-bit grayscale, resized to the
// model's square input with OpenCV's INTER_AREA (pixel-area averaging, no crop or padding), raw
// 0-255 values (the model rescales inside). This file re-implements exactly that, so the
// browser sees the pixels the Python pipeline (inspection/data/images.py) trains and evaluates on.

/** RGBA bytes -> 8-bit gray, OpenCV's fixed-point RGB2GRAY (0.299 R + 0.587 G + 0.114 B); a transparent pixel
 * is composited over black, floor((gray * alpha + 127) / 255), as inspection/data/images.py flatten_alpha does. */
export function rgbaToGray(rgba, width, height) {
  const gray = new Uint8Array(width * height);
  for (let i = 0, j = 0; i < gray.length; i += 1, j += 4) {
    const g = (rgba[j] * 4899 + rgba[j + 1] * 9617 + rgba[j + 2] * 1868 + 8192) >> 14;
    const a = rgba[j + 3];
    gray[i] = a === 255 ? g : Math.floor((g * a + 127) / 255);
  }
  return gray;
}

/** The decoder contract's header checks (inspection/data/images.py high_bit_depth): '' or the reason to refuse.
 * ``head``: the file's first bytes. PNG: IHDR's bit depth; TIFF: BitsPerSample (``tiffBits``). */
export function bitDepthReason(head, tiffBits = null) {
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((b, i) => head[i] === b);
  const bits = png && head.length > 25 ? head[24] : tiffBits;
  return bits && bits > 8 ? `${bits}-bit image; save it as an 8-bit JPEG or PNG` : '';
}

/** True for a TIFF file's first bytes (II*\0 or MM\0*). */
export function isTiff(head) {
  return (head[0] === 0x49 && head[1] === 0x49 && head[2] === 0x2a && head[3] === 0)
    || (head[0] === 0x4d && head[1] === 0x4d && head[2] === 0 && head[3] === 0x2a);
}

// OpenCV rounds float -> uchar with cvRound: to nearest, ties to even, then saturates.
function roundByte(v) {
  let r = Math.round(v);
  if (r - v === 0.5 && r % 2 !== 0) r -= 1;
  return r < 0 ? 0 : r > 255 ? 255 : r;
}

// computeResizeAreaTab from OpenCV's resize.cpp: which source pixels (and how much of each)
// fall into every destination pixel along one axis. Weights are float32, as in OpenCV.
function areaTable(ssize, dsize) {
  const scale = ssize / dsize;
  const tab = [];
  for (let dx = 0; dx < dsize; dx += 1) {
    const fsx1 = dx * scale;
    const fsx2 = fsx1 + scale;
    const cellWidth = Math.min(scale, ssize - fsx1);
    let sx1 = Math.ceil(fsx1);
    let sx2 = Math.floor(fsx2);
    sx2 = Math.min(sx2, ssize - 1);
    sx1 = Math.min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) tab.push([dx, sx1 - 1, Math.fround((sx1 - fsx1) / cellWidth)]);
    for (let sx = sx1; sx < sx2; sx += 1) tab.push([dx, sx, Math.fround(1 / cellWidth)]);
    if (fsx2 - sx2 > 1e-3) tab.push([dx, sx2, Math.fround(Math.min(Math.min(fsx2 - sx2, 1), cellWidth) / cellWidth)]);
  }
  return tab;
}

/** Gray [height x width] -> gray [size x size] with OpenCV's INTER_AREA, as cv2.resize does it. */
export function resizeArea(gray, width, height, size) {
  if (width === size && height === size) return Uint8Array.from(gray);
  const sx = width / size;
  const sy = height / size;
  const out = new Uint8Array(size * size);
  if (Number.isInteger(sx) && Number.isInteger(sy) && sx >= 1 && sy >= 1) {
    // OpenCV's fast path for integer factors: block mean, then one rounding (its 2x2 kernel
    // rounds halves up, the generic one multiplies by 1/area in float and rounds to even).
    const inv = Math.fround(1 / (sx * sy));
    const half = sx === 2 && sy === 2;
    for (let y = 0; y < size; y += 1) {
      for (let x = 0; x < size; x += 1) {
        let sum = 0;
        for (let dy = 0; dy < sy; dy += 1) {
          const row = (y * sy + dy) * width + x * sx;
          for (let dx = 0; dx < sx; dx += 1) sum += gray[row + dx];
        }
        out[y * size + x] = half ? (sum + 2) >> 2 : roundByte(Math.fround(sum * inv));
      }
    }
    return out;
  }
  if (sx < 1 || sy < 1) throw new Error(`image ${width}x${height} is smaller than the model input ${size}x${size}`);
  const xtab = areaTable(width, size);
  const ytab = areaTable(height, size);
  const buf = new Float32Array(size);
  const sum = new Float32Array(size);
  let k = 0;
  for (let dy = 0; dy < size; dy += 1) {
    sum.fill(0);
    for (; k < ytab.length && ytab[k][0] === dy; k += 1) {
      const [, syIdx, beta] = ytab[k];
      buf.fill(0);
      const row = syIdx * width;
      for (const [dx, sxIdx, alpha] of xtab) buf[dx] += gray[row + sxIdx] * alpha;
      for (let dx = 0; dx < size; dx += 1) sum[dx] += beta * buf[dx];
    }
    for (let dx = 0; dx < size; dx += 1) out[dy * size + dx] = roundByte(sum[dx]);
  }
  return out;
}

/** Centre square of a gray image (camera frames are wider than tall; the line's photos are square). */
export function centreSquare(gray, width, height) {
  const side = Math.min(width, height);
  const x0 = Math.floor((width - side) / 2);
  const y0 = Math.floor((height - side) / 2);
  const out = new Uint8Array(side * side);
  for (let y = 0; y < side; y += 1) out.set(gray.subarray((y0 + y) * width + x0, (y0 + y) * width + x0 + side), y * side);
  return { gray: out, width: side, height: side };
}

/** The drift statistics of inspection/data/imagestats.py `features`, on the resized model input. */
export function features(gray, size) {
  const n = gray.length;
  let s = 0;
  for (let i = 0; i < n; i += 1) s += gray[i];
  const mean = s / n;
  let v = 0;
  for (let i = 0; i < n; i += 1) v += (gray[i] - mean) ** 2;
  // 3x3 Laplacian (0 1 0 / 1 -4 1 / 0 1 0) over the interior pixels; its population variance.
  let ls = 0;
  let ls2 = 0;
  let m = 0;
  for (let y = 1; y < size - 1; y += 1) {
    for (let x = 1; x < size - 1; x += 1) {
      const i = y * size + x;
      const lap = gray[i - size] + gray[i + size] + gray[i - 1] + gray[i + 1] - 4 * gray[i];
      ls += lap;
      ls2 += lap * lap;
      m += 1;
    }
  }
  const lmean = ls / m;
  return { brightness: mean, contrast: Math.sqrt(v / n), sharpness: ls2 / m - lmean * lmean };
}

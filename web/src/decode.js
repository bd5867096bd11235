// Photo bytes -> full-resolution gray pixels, as the page decodes them: the decoder contract with the batch CLI
// (inspection/data/images.py): the same formats (TIFF through UTIF, PNG with alpha, 16-bit refused with the same
// reason), the same gray rule (preprocess.js rgbaToGray), no colour management. Errors a photo can cause carry
// ``unreadable: true`` and become a RETAKE row.
import { bitDepthReason, isTiff, rgbaToGray } from './preprocess.js';

/** Image bytes (a File or Blob) -> gray pixels at full resolution, without colour management. */
export async function decodeGray(blob) {
  if (!blob.size) throw Object.assign(new Error('empty file'), { unreadable: true });
  const head = new Uint8Array(await blob.slice(0, 32).arrayBuffer());
  const deep = bitDepthReason(head);
  if (deep) throw Object.assign(new Error(deep), { unreadable: true });
  if (isTiff(head)) return decodeTiff(await blob.arrayBuffer());
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (err) {
    throw Object.assign(new Error('not a decodable image'), { unreadable: true });
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const { data } = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  bitmap.close();
  return { gray: rgbaToGray(data, canvas.width, canvas.height), width: canvas.width, height: canvas.height };
}

/** A TIFF (the browser has no TIFF decoder): the first image through UTIF, then the same gray rule. */
function decodeTiff(buffer) {
  let page;
  try {
    const ifds = self.UTIF.decode(buffer);
    [page] = ifds;
    self.UTIF.decodeImage(buffer, page);
  } catch (err) {
    throw Object.assign(new Error('not a decodable image'), { unreadable: true });
  }
  const bits = page.t258 ? Math.max(...page.t258) : 8;
  const deep = bitDepthReason([], bits);
  if (deep) throw Object.assign(new Error(deep), { unreadable: true });
  if (!page.width || !page.height) throw Object.assign(new Error('not a decodable image'), { unreadable: true });
  const rgba = self.UTIF.toRGBA8(page);
  return { gray: rgbaToGray(rgba, page.width, page.height), width: page.width, height: page.height };
}

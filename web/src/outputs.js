// Which node of the TF.js graph model is which output. The converted graph model names its outputs
// after graph nodes (Identity:0, Identity_1:0); metadata.json "outputs" maps the contract's names
// (defect_probability, ood_score) to them. Shared by the page (app.js) and the Node parity check.

export const OUTPUT_KEYS = ['defect_probability', 'ood_score'];

function nodeOrder(name) {
  const m = /_(\d+)(:\d+)?$/.exec(name);
  return m ? Number(m[1]) : 0;
}

/**
 * {defect_probability: node name, ood_score: node name | null} from model.json's signature.outputs
 * ({key: {name}}), its userDefinedMetadata.structuredOutputKeys (when converted with structured names)
 * and metadata.json's "outputs" ({key: node name or signature key}). Throws when metadata names an
 * output the model does not have.
 */
export function outputNodes(signatureOutputs, structuredKeys, metaOutputs) {
  const sig = signatureOutputs || {};
  const names = Object.values(sig).map((o) => o.name).sort((a, b) => nodeOrder(a) - nodeOrder(b));
  const bare = (n) => n.replace(/:0$/, '');
  const find = (v) => names.find((n) => n === v || bare(n) === bare(v));
  const out = {};
  for (const key of OUTPUT_KEYS) {
    const wanted = metaOutputs && metaOutputs[key];
    let node = null;
    if (wanted) {
      node = (sig[wanted] && sig[wanted].name) || find(wanted)
        || (structuredKeys && structuredKeys.includes(wanted) ? names[structuredKeys.indexOf(wanted)] : null);
      if (!node) throw new Error(`outputs.${key} is "${wanted}", which the model does not have`);
    } else if (sig[key]) {
      node = sig[key].name;
    } else if (structuredKeys && structuredKeys.includes(key)) {
      node = names[structuredKeys.indexOf(key)];
    } else if (names.length === 1) {
      node = key === 'defect_probability' ? names[0] : null;
    } else if (names.length === OUTPUT_KEYS.length) {
      // TF flattens a dict of outputs in sorted key order: Identity:0, Identity_1:0, ...
      node = names[[...OUTPUT_KEYS].sort().indexOf(key)];
    }
    out[key] = node;
  }
  if (!out.defect_probability) throw new Error('the model has no defect_probability output');
  return out;
}

/**
 * Run a GraphModel on a [n, size, size, 1] tensor; returns {defect_probability: Float32Array,
 * ood_score: Float32Array | null}. Call inside tf.tidy (the output tensors are not disposed here).
 */
export function runModel(model, x, nodes) {
  const wanted = [nodes.defect_probability, ...(nodes.ood_score ? [nodes.ood_score] : [])];
  let result = model.execute(x, wanted);
  if (!Array.isArray(result)) result = [result];
  return {
    defect_probability: result[0].dataSync(),
    ood_score: nodes.ood_score ? result[1].dataSync() : null,
  };
}

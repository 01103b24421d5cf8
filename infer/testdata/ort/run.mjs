// Runs an ONNX model in onnxruntime over float32 inputs and writes the
// logits: node run.mjs MODEL INPUT.f32 OUTPUT.f32 BATCH C H W [ids]
// With "ids" the inputs are bytes as v/255, fed as int64 ids [BATCH, W]
// (a text model's). It prints the graph's opset and the execution
// provider as JSON.
import { readFileSync, writeFileSync } from "node:fs";
import * as ort from "onnxruntime-node";

const [model, input, output, batch, c, h, w, ids] = process.argv.slice(2);
const dims = [batch, c, h, w].map(Number);
const buf = readFileSync(input);
const x = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
if (x.length !== dims.reduce((a, b) => a * b)) {
  console.error(`input holds ${x.length} floats, not ${dims.join("x")}`);
  process.exit(2);
}
const session = await ort.InferenceSession.create(model, { executionProviders: ["cpu"], intraOpNumThreads: 1, graphOptimizationLevel: process.env.ORT_OPT || "all" });
const feed = ids === "ids"
  ? new ort.Tensor("int64", BigInt64Array.from(x, (v) => BigInt(Math.round(v * 255))), [dims[0], dims[3]])
  : new ort.Tensor("float32", x, dims);
const res = await session.run({ input: feed });
const y = res.logits;
writeFileSync(output, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
console.log(JSON.stringify({ inputs: session.inputNames, outputs: session.outputNames, dims: y.dims }));

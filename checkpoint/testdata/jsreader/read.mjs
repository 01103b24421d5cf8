// An independent reader of lathe's Arrow files: apache-arrow for
// JavaScript opens the file, and this prints, as JSON, the schema's
// metadata, the state document (the row of role "meta"), every tensor's
// name, role, shape and encoding, and the raw float32 bytes (base64) of
// the tensor named by the second argument, decoded from its "values"
// column (dense_f32 tensors).
import { readFileSync } from "node:fs";
import { tableFromIPC } from "apache-arrow";

const [file, want] = process.argv.slice(2);
const table = tableFromIPC(readFileSync(file));
const out = { metadata: Object.fromEntries(table.schema.metadata), state: null, rows: [], values: null };
const col = (name) => {
  const c = table.getChild(name);
  if (c === null) throw new Error(`no column ${name}`);
  return c;
};
for (let i = 0; i < table.numRows; i++) {
  const name = col("name").get(i);
  const encoding = col("encoding").get(i);
  if (col("role").get(i) === "meta") {
    out.state = new TextDecoder().decode(col("codes").get(i));
    continue;
  }
  out.rows.push({ name, role: col("role").get(i), shape: Array.from(col("shape").get(i).toArray(), Number), encoding });
  if (name === want) {
    if (encoding !== "dense_f32") throw new Error(`${name} is ${encoding}, not dense_f32`);
    const v = Float32Array.from(col("values").get(i).toArray());
    out.values = Buffer.from(v.buffer).toString("base64");
  }
}
process.stdout.write(JSON.stringify(out));

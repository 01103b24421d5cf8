package infer

import "encoding/binary"

// pb appends protocol-buffer fields (wire format) for the ONNX writer; the
// handful of messages ONNX needs do not warrant a generated package.
type pb struct{ b []byte }

func (p *pb) tag(field, wire int) { p.b = binary.AppendUvarint(p.b, uint64(field)<<3|uint64(wire)) }

// int writes a varint field (int32, int64 and enums alike; negative values
// take ten bytes, as protobuf's int64 does).
func (p *pb) int(field int, v int64) {
	p.tag(field, 0)
	p.b = binary.AppendUvarint(p.b, uint64(v))
}

func (p *pb) bytes(field int, b []byte) {
	p.tag(field, 2)
	p.b = binary.AppendUvarint(p.b, uint64(len(b)))
	p.b = append(p.b, b...)
}

func (p *pb) str(field int, s string) { p.bytes(field, []byte(s)) }

func (p *pb) msg(field int, m *pb) { p.bytes(field, m.b) }

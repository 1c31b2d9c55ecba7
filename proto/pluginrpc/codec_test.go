package pluginrpc

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"alknet.dev/alknet/proto/pluginpb"
)

type Chunk = pluginpb.Chunk

var sampleChunks = []*Chunk{
	{},
	{Data: []byte("hello")},
	{Data: bytes.Repeat([]byte{0xab}, ChunkSize)},
	{Fin: true},
	{Data: []byte("last"), Fin: true},
	{Reset_: true, Code: 1<<40 + 7},
	{Open: &pluginpb.StreamOpen{Conn: 3, Accept: true}},
	{Open: &pluginpb.StreamOpen{}},
	{Opened: true},
	{Data: []byte("first"), Opened: true},
	{Data: []byte{0}, Fin: true, Reset_: true, Code: 2, Open: &pluginpb.StreamOpen{Conn: 1 << 40}, Opened: true},
}

func flat(bs mem.BufferSlice) []byte { return bs.Materialize() }

// The codec writes exactly what proto.Marshal writes, so a peer on gRPC's
// stock codec reads it.
func TestChunkCodecWritesProtobuf(t *testing.T) {
	for _, c := range sampleChunks {
		want, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Codec{}.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(flat(got), want) {
			t.Fatalf("%v: codec wrote %x, proto.Marshal %x", c, flat(got), want)
		}
		got.Free()
	}
}

// The codec reads what proto.Marshal writes, whole or split across
// buffers the way gRPC may hand them over.
func TestChunkCodecReadsProtobuf(t *testing.T) {
	for _, c := range sampleChunks {
		b, _ := proto.Marshal(c)
		for _, split := range []int{0, 1, len(b) / 2, len(b) - 1} {
			var bs mem.BufferSlice
			if split > 0 && split < len(b) {
				bs = mem.BufferSlice{mem.SliceBuffer(b[:split]), mem.SliceBuffer(b[split:])}
			} else if len(b) > 0 {
				bs = mem.BufferSlice{mem.SliceBuffer(b)}
			}
			var got Chunk
			if err := (Codec{}).Unmarshal(bs, &got); err != nil {
				t.Fatalf("%v split %d: %v", c, split, err)
			}
			if !proto.Equal(&got, c) {
				t.Fatalf("split %d: read %v, want %v", split, &got, c)
			}
		}
	}
}

// Other messages go through the stock codec.
func TestCodecOtherMessages(t *testing.T) {
	in := &pluginpb.ConnRef{Conn: 9}
	bs, err := Codec{}.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out pluginpb.ConnRef
	if err := (Codec{}).Unmarshal(bs, &out); err != nil || !proto.Equal(&out, in) {
		t.Fatalf("round trip: %v %v", &out, err)
	}
}

// Chunk bytes come from another process: the codec must never panic and
// must agree with proto.Unmarshal on what the known fields hold and on
// whether the input is well-formed.
func FuzzChunkUnmarshal(f *testing.F) {
	for _, c := range sampleChunks {
		if len(c.Data) > 64 {
			continue // a large seed slows every run without adding a case
		}
		b, _ := proto.Marshal(c)
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0xff})
	f.Add([]byte{0x08, 0x01, 0x32, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var got, want Chunk
		err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got)
		werr := proto.Unmarshal(b, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%x: codec %v, proto.Unmarshal %v", b, err, werr)
		}
		if err != nil {
			return
		}
		want.ProtoReflect().SetUnknown(nil)
		if want.Open != nil {
			want.Open.ProtoReflect().SetUnknown(nil)
		}
		if got.Open != nil {
			got.Open.ProtoReflect().SetUnknown(nil)
		}
		if !proto.Equal(&got, &want) {
			t.Fatalf("%x: codec read %v, proto.Unmarshal %v", b, &got, &want)
		}
	})
}

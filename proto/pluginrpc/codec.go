package pluginrpc

import (
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"alknet.dev/alknet/proto/pluginpb"

	// Registers the standard "proto" codec the fallback below uses.
	_ "google.golang.org/grpc/encoding/proto"
)

// Codec is the gRPC codec of the core↔plugin connection (hand-written,
// not generated). It produces and reads the standard protobuf wire format
// — a peer using gRPC's stock codec interoperates — but it encodes and
// decodes Chunk, the message every bridged stream byte travels in, itself:
//
//   - Marshal copies the chunk's bytes once into a pooled buffer that gRPC
//     returns to the pool when it has written them (the stock codec
//     marshals into a buffer it first zeroes);
//   - Unmarshal reads the fields with protowire straight from gRPC's
//     received buffers and copies the data once into a pooled buffer
//     (the stock codec first joins the buffers into a zeroed one, then
//     proto.Unmarshal copies the data again into a fresh allocation).
//
// A received Chunk's Data comes from ChunkBuffers: whoever has consumed it
// may hand it back with ReleaseChunkData. Every other message goes
// through the stock codec.
//
// Both sides install it with ForceCodecV2 / ForceServerCodecV2 (see
// DialOptions and ServerOptions).
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name is "proto": the wire format is protobuf's.
func (Codec) Name() string { return "proto" }

var stock = encoding.GetCodecV2("proto")

// Marshal encodes v.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	c, ok := v.(*pluginpb.Chunk)
	if !ok {
		return stock.Marshal(v)
	}
	var open []byte
	if c.GetOpen() != nil {
		b, err := proto.Marshal(c.GetOpen())
		if err != nil {
			return nil, fmt.Errorf("marshal chunk open: %w", err)
		}
		open = b
	}
	n := 0
	if len(c.Data) > 0 {
		n += 1 + protowire.SizeBytes(len(c.Data))
	}
	if c.Fin {
		n += 2
	}
	if c.Reset_ {
		n += 2
	}
	if c.Code != 0 {
		n += 1 + protowire.SizeVarint(c.Code)
	}
	if c.Open != nil {
		n += 1 + protowire.SizeBytes(len(open))
	}
	if c.Opened {
		n += 2
	}
	if n == 0 {
		return nil, nil // an empty message
	}
	bp := ChunkBuffers.Get(n)
	b := (*bp)[:0]
	// Fields in number order, as proto.Marshal writes them.
	if len(c.Data) > 0 {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, c.Data)
	}
	if c.Fin {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if c.Reset_ {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if c.Code != 0 {
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, c.Code)
	}
	if c.Open != nil {
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendBytes(b, open)
	}
	if c.Opened {
		b = protowire.AppendTag(b, 6, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	*bp = b
	return mem.BufferSlice{mem.NewBuffer(bp, ChunkBuffers)}, nil
}

// Unmarshal decodes data into v.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	c, ok := v.(*pluginpb.Chunk)
	if !ok {
		return stock.Unmarshal(data, v)
	}
	var b []byte
	switch len(data) {
	case 0:
	case 1:
		b = data[0].ReadOnlyData()
	default:
		joined := data.MaterializeToBuffer(ChunkBuffers)
		defer joined.Free()
		b = joined.ReadOnlyData()
	}
	c.Reset()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("chunk: %w", protowire.ParseError(n))
		}
		if !num.IsValid() {
			return fmt.Errorf("chunk: invalid field number %d", num)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("chunk data: %w", protowire.ParseError(n))
			}
			// The last occurrence of a field wins (protobuf encoding
			// rules), an empty one included.
			c.Data = nil
			if len(v) > 0 {
				bp := ChunkBuffers.Get(len(v))
				copy(*bp, v)
				c.Data = *bp
			}
			b = b[n:]
		case (num == 2 || num == 3 || num == 4 || num == 6) && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("chunk field %d: %w", num, protowire.ParseError(n))
			}
			switch num {
			case 2:
				c.Fin = x != 0
			case 3:
				c.Reset_ = x != 0
			case 6:
				c.Opened = x != 0
			default:
				c.Code = x
			}
			b = b[n:]
		case num == 5 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("chunk open: %w", protowire.ParseError(n))
			}
			if c.Open == nil {
				c.Open = &pluginpb.StreamOpen{}
			}
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(v, c.Open); err != nil {
				return fmt.Errorf("chunk open: %w", err)
			}
			b = b[n:]
		default:
			// An unknown field (a newer peer) or a known one with another
			// wire type: skipped, as proto.Unmarshal keeps such fields
			// out of the known ones.
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("chunk field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

// ReleaseChunkData hands a received Chunk's Data back to ChunkBuffers once
// it has been consumed (written on, copied out). Data of another origin is
// left to the garbage collector.
func ReleaseChunkData(b []byte) {
	if cap(b) > 0 {
		ChunkBuffers.Put(&b)
	}
}

// ChunkBuffers is the buffer pool of the core↔plugin connection: gRPC
// reads frames into it, and the codec takes chunk buffers from it.
// Buffers come in powers of two from 4 KiB to 512 KiB and are not zeroed
// on reuse: every user writes a buffer before reading it (gRPC's own
// pools zero them, which showed up as a tenth of the bridge's CPU).
var ChunkBuffers = &dirtyPool{}

const (
	minPoolShift = 12 // 4 KiB
	maxPoolShift = 19 // 512 KiB: a full chunk plus its framing
)

type dirtyPool struct {
	tiers [maxPoolShift - minPoolShift + 1]sync.Pool
}

var _ mem.BufferPool = (*dirtyPool)(nil)

// tier is the pool whose buffers hold n bytes, or -1 when n is larger
// than the largest.
func tier(n int) int {
	if n <= 1<<minPoolShift {
		return 0
	}
	t := bits.Len(uint(n-1)) - minPoolShift
	if t >= len(ChunkBuffers.tiers) {
		return -1
	}
	return t
}

// Get returns a buffer of length n; its contents are not defined.
func (p *dirtyPool) Get(n int) *[]byte {
	t := tier(n)
	if t < 0 {
		b := make([]byte, n)
		return &b
	}
	if bp, ok := p.tiers[t].Get().(*[]byte); ok {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, 1<<(t+minPoolShift))
	return &b
}

// Put returns a buffer obtained from Get; others are dropped.
func (p *dirtyPool) Put(bp *[]byte) {
	c := cap(*bp)
	t := tier(c)
	if t < 0 || c != 1<<(t+minPoolShift) {
		return
	}
	*bp = (*bp)[:0]
	p.tiers[t].Put(bp)
}

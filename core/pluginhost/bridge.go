package pluginhost

import (
	"errors"
	"io"

	"google.golang.org/grpc"

	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// chunkRPC is the core's side of one Host.Stream RPC.
type chunkRPC interface {
	Send(*pluginpb.Chunk) error
	Recv() (*pluginpb.Chunk, error)
}

var _ chunkRPC = grpc.BidiStreamingServer[pluginpb.Chunk, pluginpb.Chunk](nil)

// bridge copies one endpoint stream and one chunk RPC into each other,
// both ways, until both directions are finished: half-close (fin) and
// reset (with its code) cross in either direction, and flow control stays
// end to end — a chunk is read from one side only after the previous one
// was written to the other. A failed side resets the other.
func bridge(st endpoint.Stream, rpc chunkRPC) {
	done := make(chan struct{}, 2)
	go func() {
		// peer → plugin. Owned by bridge.
		defer func() { done <- struct{}{} }()
		bp := pluginrpc.ChunkBuffers.Get(pluginrpc.ChunkSize)
		defer pluginrpc.ChunkBuffers.Put(bp)
		buf := *bp
		for {
			n, err := st.Read(buf)
			if n > 0 {
				if rpc.Send(&pluginpb.Chunk{Data: buf[:n]}) != nil {
					st.CancelRead(uint64(endpoint.CodeUnavailable))
					return
				}
			}
			if errors.Is(err, io.EOF) {
				_ = rpc.Send(&pluginpb.Chunk{Fin: true})
				return
			}
			if err != nil {
				_ = rpc.Send(&pluginpb.Chunk{Reset_: true, Code: resetCode(err)})
				return
			}
		}
	}()
	go func() {
		// plugin → peer. Owned by bridge.
		defer func() { done <- struct{}{} }()
		for {
			c, err := rpc.Recv()
			if err != nil {
				// The plugin went away mid-stream.
				st.CancelWrite(uint64(endpoint.CodeUnavailable))
				st.CancelRead(uint64(endpoint.CodeUnavailable))
				return
			}
			if len(c.GetData()) > 0 {
				_, err := st.Write(c.GetData())
				pluginrpc.ReleaseChunkData(c.GetData())
				if err != nil {
					st.CancelRead(0)
					return
				}
			}
			if c.GetReset_() {
				st.CancelWrite(c.GetCode())
				return
			}
			if c.GetFin() {
				_ = st.CloseWrite()
				return
			}
		}
	}()
	<-done
	<-done
}

// resetCode extracts a peer's reset code from a stream error.
func resetCode(err error) uint64 {
	var re *endpoint.ResetError
	if errors.As(err, &re) {
		return re.Code
	}
	return 0
}

package main

import (
	"bufio"

	"alknet.dev/alknet/plugins/git/pktline"
)

type pktKind = pktline.Kind

const (
	pktData        = pktline.Data
	pktFlush       = pktline.Flush
	pktDelim       = pktline.Delim
	pktResponseEnd = pktline.ResponseEnd
)

var (
	flushPkt       = []byte("0000")
	responseEndPkt = []byte("0002")
	errPktLength   = pktline.ErrLength
)

// pktReader reads pkt-lines whole, length digits included, so that they
// can be forwarded as they came.
type pktReader struct {
	r   *bufio.Reader
	buf [pktline.Max]byte
}

// next reads one pkt-line (valid until the next call) and its kind.
func (p *pktReader) next() ([]byte, pktKind, error) { return pktline.Read(p.r, p.buf[:]) }

func appendPkt(dst, payload []byte) []byte { return pktline.Append(dst, payload) }

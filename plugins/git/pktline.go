package git

import (
	"io"

	"alknet.dev/alknet/plugins/git/pktline"
)

// The plugin's names for the shared pkt-line framing (package pktline).
const (
	pktMax     = pktline.Max
	pktDataMax = pktline.DataMax
)

type pktKind = pktline.Kind

const (
	pktData        = pktline.Data
	pktFlush       = pktline.Flush
	pktDelim       = pktline.Delim
	pktResponseEnd = pktline.ResponseEnd
)

var errPktLength = pktline.ErrLength

// readPkt reads one pkt-line into buf (nil: a new slice) and returns its
// payload.
func readPkt(r io.Reader, buf []byte) ([]byte, pktKind, error) {
	line, kind, err := pktline.Read(r, buf)
	if err != nil || kind != pktData {
		return nil, kind, err
	}
	return line[4:], kind, nil
}

func appendPkt(dst, payload []byte) []byte { return pktline.Append(dst, payload) }

// writePkt writes payload as one pkt-line.
func writePkt(w io.Writer, payload []byte) error {
	_, err := w.Write(pktline.Append(nil, payload))
	return err
}

// writeFlush writes a flush-pkt.
func writeFlush(w io.Writer) error {
	_, err := io.WriteString(w, "0000")
	return err
}

func errLine(msg string) []byte { return pktline.ErrLine(msg) }

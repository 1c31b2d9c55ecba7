package main

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/plugins/dns/pkarr"
)

// dnsPublishCmd signs a record set with this machine's vault key and
// publishes it on a node (dns/publish): the self-certifying records of
// docs/spec/handlers.md, DNS.
func (a *app) dnsPublishCmd() *cobra.Command {
	var f callFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "publish [FINGERPRINT@]HOST[:PORT] [RECORD...]",
		Short: "Sign records with this machine's key and publish them on a node (dns/publish)",
		Long: `Signs a record set with this machine's vault key — pkarr's signed packet: the
public key, the signature, a timestamp in microseconds and the DNS records —
and publishes it with dns/publish on HOST (which needs scope dns:publish for
this machine; the node's own operator has it). HOST serves the records under
<z-base-32 of the key>.<its signed_zone> and sends the packet to its peers.

Each RECORD is a zone-file line relative to the key: "@ 300 IN A 192.0.2.7",
"_alknet._udp 300 IN TXT \"...\"". Without records, the packet holds this
machine's dial string as HOST was reached:
  _alknet._udp 300 IN TXT "alknet=<fingerprint>@HOST:PORT"
A newer publication replaces the whole set.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := a.dataDir()
			if err != nil {
				return err
			}
			v, _, err := a.openVault(d)
			if err != nil {
				return fmt.Errorf("dns publish signs with this machine's key: %w", err)
			}
			defer v.Lock()
			k, err := v.NodeKey()
			if err != nil {
				return err
			}
			signer := k.Signer()
			pub, ok := signer.Public().(ed25519.PublicKey)
			if !ok {
				return errors.New("dns publish: this machine's key is not Ed25519")
			}
			addr, err := f.node(args[0])
			if err != nil {
				return err
			}
			records := args[1:]
			if len(records) == 0 {
				records = []string{fmt.Sprintf(`_alknet._udp 300 IN TXT "alknet=%s@%s"`, identity.KeyFingerprint(pub), addr)}
			}
			packet, err := signRecords(signer, pub, uint64(time.Now().UnixMicro()), records)
			if err != nil {
				return err
			}
			conn, err := a.connectCall(&f, addr)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			out, err := conn.Call(ctx, "dns/publish", map[string]string{"packet": base64.StdEncoding.EncodeToString(packet)})
			if err != nil {
				return fmt.Errorf("dns/publish on %s: %w", addr, err)
			}
			var res struct {
				Name      string `json:"name"`
				Timestamp uint64 `json:"timestamp"`
				Stored    bool   `json:"stored"`
				Peers     []struct {
					Peer   string `json:"peer"`
					Result string `json:"result,omitempty"`
					Error  string `json:"error,omitempty"`
				} `json:"peers"`
			}
			if err := json.Unmarshal(out, &res); err != nil {
				return fmt.Errorf("dns/publish answered %s: %w", out, err)
			}
			if asJSON {
				return a.printJSON(res)
			}
			fmt.Fprintf(a.out, "published %s (timestamp %d)\n", res.Name, res.Timestamp)
			failed := 0
			for _, p := range res.Peers {
				if p.Error != "" {
					failed++
					fmt.Fprintf(a.out, "  peer %s: %s\n", p.Peer, p.Error)
				} else {
					fmt.Fprintf(a.out, "  peer %s: %s\n", p.Peer, p.Result)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d peers did not take the packet", failed, len(res.Peers))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print dns/publish's answer as JSON")
	f.add(c)
	return c
}

// signRecords builds the signed packet of records (zone-file lines
// relative to the key) with signer's Ed25519 key.
func signRecords(signer crypto.Signer, pub ed25519.PublicKey, ts uint64, records []string) ([]byte, error) {
	origin := pkarr.EncodeZBase32(pub) + "."
	m := new(dns.Msg)
	m.Response, m.Authoritative = true, true
	zp := dns.NewZoneParser(strings.NewReader(strings.Join(records, "\n")+"\n"), origin, "records")
	zp.SetDefaultTTL(300)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if !dns.IsSubDomain(origin, rr.Header().Name) {
			return nil, fmt.Errorf("record %q is not under the key's name: write names relative to it (@, _alknet._udp, …)", rr.String())
		}
		m.Answer = append(m.Answer, rr)
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("records: %w", err)
	}
	m.Compress = true
	wire, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("records: %w", err)
	}
	if len(wire) > pkarr.MaxDNSBytes {
		return nil, fmt.Errorf("the records take %d bytes; a signed packet holds at most %d", len(wire), pkarr.MaxDNSBytes)
	}
	sig, err := signer.Sign(nil, pkarr.Signable(ts, wire), crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	packet := append(append(append([]byte(pub), sig...), binary.BigEndian.AppendUint64(nil, ts)...), wire...)
	if _, err := pkarr.Parse(packet); err != nil {
		return nil, err
	}
	return packet, nil
}

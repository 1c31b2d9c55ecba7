package ssh

// OfferedCiphers reads an SSH identification line and KEXINIT packet (as
// either side sends them first) and returns the ciphers offered for the
// server-to-client direction. For the package's external tests.
func OfferedCiphers(b []byte) ([]string, error) {
	k, err := parseClientStart(b)
	if err != nil {
		return nil, err
	}
	return k.CiphersServerClient, nil
}

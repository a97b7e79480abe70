// Command ocicrypt-check is an independent reference for podmigrate's layer encryption: it runs
// the real github.com/containers/ocicrypt (the version containerd's imgcrypt v2.0.2 and CRI-O
// use) on layers and descriptors that ocicheckpoint/encryption.py made, and makes layers for it
// to decrypt. The tests (tests/ocicheckpoint/test_encryption.py) build it into a cache directory
// keyed by the ocicrypt version; a format divergence makes them fail.
//
//	ocicrypt-check decrypt -desc DESC.json -key PRIV.pem [-key ...] -in ENC -out PLAIN
//	    decrypts as ctd-decoder does (ocicrypt.DecryptLayer, which verifies the HMAC), then
//	    checks the plaintext's digest against the "digest" of the unwrapped private options
//	    (DecryptLayer in v1.2.1 returns an empty digest: it hands back the options its block
//	    cipher rebuilt, which lack it; containerd's unpacker relies on the config's diff_ids);
//	    prints {"digest": ...}. Exit status 1, message on stderr, when it cannot.
//	ocicrypt-check encrypt -pubkey PUB.pem [-pubkey ...] -media-type T -in PLAIN -out ENC
//	    encrypts as imgcrypt's encryptLayer does and prints the encrypted descriptor (JSON).
package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containers/ocicrypt"
	"github.com/containers/ocicrypt/blockcipher"
	encconfig "github.com/containers/ocicrypt/config"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type multi []string

func (m *multi) String() string     { return fmt.Sprint(*m) }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func readAll(paths []string) ([][]byte, error) {
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func decrypt(args []string) error {
	fs := flag.NewFlagSet("decrypt", flag.ExitOnError)
	descPath := fs.String("desc", "", "descriptor JSON of the encrypted layer")
	in := fs.String("in", "", "encrypted layer")
	out := fs.String("out", "", "where the plaintext goes")
	var keys multi
	fs.Var(&keys, "key", "PEM private key (repeatable)")
	_ = fs.Parse(args)

	raw, err := os.ReadFile(*descPath)
	if err != nil {
		return err
	}
	var desc ocispec.Descriptor
	if err := json.Unmarshal(raw, &desc); err != nil {
		return fmt.Errorf("descriptor: %w", err)
	}
	privs, err := readAll(keys)
	if err != nil {
		return err
	}
	cc, err := encconfig.DecryptWithPrivKeys(privs, make([][]byte, len(privs)))
	if err != nil {
		return err
	}
	src, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer src.Close()
	r, plainDigest, err := ocicrypt.DecryptLayer(cc.DecryptConfig, src, desc, false)
	if err != nil {
		return fmt.Errorf("DecryptLayer: %w", err)
	}
	dst, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer dst.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(dst, h), r); err != nil {
		return fmt.Errorf("decrypting: %w", err)
	}
	got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	if plainDigest != "" && got != plainDigest {
		return fmt.Errorf("plaintext hashed to %s, ocicrypt returned %s", got, plainDigest)
	}
	wrapped := ocicrypt.GetWrappedKeysMap(desc)["jwe"]
	var optsDigest digest.Digest
	for _, part := range strings.Split(wrapped, ",") {
		jwe, err := base64.StdEncoding.DecodeString(part)
		if err != nil {
			return err
		}
		optsData, err := ocicrypt.GetKeyWrapper("jwe").UnwrapKey(cc.DecryptConfig, jwe)
		if err != nil {
			continue
		}
		var opts blockcipher.PrivateLayerBlockCipherOptions
		if err := json.Unmarshal(optsData, &opts); err != nil {
			return fmt.Errorf("private options: %w", err)
		}
		optsDigest = opts.Digest
		break
	}
	if got != optsDigest {
		return fmt.Errorf("plaintext hashed to %s, the wrapped private options say %q", got, optsDigest)
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]string{"digest": got.String()})
}

func encrypt(args []string) error {
	fs := flag.NewFlagSet("encrypt", flag.ExitOnError)
	mediaType := fs.String("media-type", ocispec.MediaTypeImageLayer, "plaintext media type")
	in := fs.String("in", "", "plaintext layer")
	out := fs.String("out", "", "where the encrypted layer goes")
	var pubs multi
	fs.Var(&pubs, "pubkey", "PEM public key of a recipient (repeatable)")
	_ = fs.Parse(args)

	pubKeys, err := readAll(pubs)
	if err != nil {
		return err
	}
	cc, err := encconfig.EncryptWithJwe(pubKeys)
	if err != nil {
		return err
	}
	plain, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	src, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer src.Close()
	desc := ocispec.Descriptor{MediaType: *mediaType, Digest: digest.FromBytes(plain), Size: int64(len(plain))}
	r, fin, err := ocicrypt.EncryptLayer(cc.EncryptConfig, src, desc)
	if err != nil {
		return fmt.Errorf("EncryptLayer: %w", err)
	}
	dst, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer dst.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(dst, h), r)
	if err != nil {
		return err
	}
	annotations, err := fin()
	if err != nil {
		return err
	}
	enc := ocispec.Descriptor{
		MediaType:   *mediaType + "+encrypted",
		Digest:      digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)),
		Size:        n,
		Annotations: annotations,
	}
	return json.NewEncoder(os.Stdout).Encode(enc)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ocicrypt-check decrypt|encrypt ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "decrypt":
		err = decrypt(os.Args[2:])
	case "encrypt":
		err = encrypt(os.Args[2:])
	default:
		err = errors.New("unknown command " + os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

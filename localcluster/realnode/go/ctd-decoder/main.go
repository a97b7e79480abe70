// Command ctd-decoder is containerd's stream processor for encrypted image layers, as imgcrypt's
// cmd/ctd-decoder is: containerd runs it for "+encrypted" layers during unpack with the layer's
// ciphertext on stdin and imgcrypt's Payload (the layer descriptor with its ocicrypt annotations,
// and the CRI's decrypt config) on fd 3, and reads the plaintext from stdout.
//
// Why ours and not upstream's main: imgcrypt's command-line tools are a separate Go module
// (github.com/containerd/imgcrypt/cmd, with a replace directive to its parent) that is not
// published to the Go module proxy, so it cannot be pinned and built from it. The work is
// upstream's library, pinned in go.mod at the version containerd v2.3.7 itself uses
// (imgcrypt/v2 v2.0.2, ocicrypt v1.2.1): the payload type, encryption.DecryptLayer, and the
// key-directory handling of upstream's --decryption-keys-path (every regular file in it, parsed
// by ocicrypt's utils.SortDecryptionKeys; symlinks refused).
package main

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/imgcrypt/v2"
	"github.com/containerd/imgcrypt/v2/images/encryption"
	"github.com/containerd/typeurl/v2"
	encconfig "github.com/containers/ocicrypt/config"
	encutils "github.com/containers/ocicrypt/utils"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const payloadFD = 3

func payload() (*imgcrypt.Payload, error) {
	f := os.NewFile(payloadFD, "payload")
	if f == nil {
		return nil, errors.New("no payload on fd 3: is containerd's CRI pulling with use_local_image_pull (the transfer service passes none)?")
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read payload: %w", err)
	}
	var anything anypb.Any
	if err := proto.Unmarshal(data, &anything); err != nil {
		return nil, fmt.Errorf("could not proto.Unmarshal() decrypt data: %w", err)
	}
	v, err := typeurl.UnmarshalAny(&anything)
	if err != nil {
		return nil, fmt.Errorf("could not UnmarshalAny() the decrypt data: %w", err)
	}
	p, ok := v.(*imgcrypt.Payload)
	if !ok {
		return nil, fmt.Errorf("unknown payload type %s", anything.GetTypeUrl())
	}
	return p, nil
}

// keysIn reads every regular file under dir as a candidate decryption key (as upstream does).
func keysIn(dir string) (*encconfig.DecryptConfig, error) {
	var b64 []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return errors.New("symbolic links not supported in decryption keys paths")
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		b64 = append(b64, base64.StdEncoding.EncodeToString(data))
		return nil
	})
	if err != nil {
		return nil, err
	}
	params, err := encutils.SortDecryptionKeys(strings.Join(b64, ","))
	if err != nil {
		return nil, err
	}
	return encconfig.InitDecryption(params).DecryptConfig, nil
}

func run() error {
	keysPath := flag.String("decryption-keys-path", "", "directory of private keys to decrypt with (beside the payload's)")
	flag.Parse()
	p, err := payload()
	if err != nil {
		return err
	}
	dc := &p.DecryptConfig
	if *keysPath != "" {
		nodeKeys, err := keysIn(*keysPath)
		if err != nil {
			return fmt.Errorf("unable to get decryption keys in provided key path: %w", err)
		}
		cc := encconfig.CombineCryptoConfigs([]encconfig.CryptoConfig{{DecryptConfig: nodeKeys}, {DecryptConfig: dc}})
		dc = cc.DecryptConfig
	}
	_, r, _, err := encryption.DecryptLayer(dc, os.Stdin, p.Descriptor, false)
	if err != nil {
		return fmt.Errorf("call to DecryptLayer failed: %w", err)
	}
	if _, err := io.Copy(os.Stdout, r); err != nil {
		return fmt.Errorf("could not copy data: %w", err)
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Command manifestcheck reads a krew plugin manifest the strict way: into krew's own public
// manifest type (sigs.k8s.io/krew/pkg/index.Plugin), refusing unknown and duplicate fields.
//
// Why, next to krew's validate-krew-manifest (which build.sh builds from the same pinned
// release): krew reads manifests leniently (indexscanner uses yaml.Unmarshal, not
// UnmarshalStrict), so a misspelt optional field ("caveat:", "file:") would pass its validation
// and be silently ignored at install time. krew's validation code itself lives in internal
// packages (sigs.k8s.io/krew/internal/index/validation), which Go lets no other module import;
// its public form is the validate-krew-manifest command.
//
// Usage: manifestcheck MANIFEST.yaml — exit 0 and one summary line, or exit 1 and the error.
package main

import (
	"fmt"
	"os"

	"sigs.k8s.io/krew/pkg/index"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: manifestcheck MANIFEST.yaml")
		os.Exit(2)
	}
	if err := check(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "manifestcheck: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func check(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var plugin index.Plugin
	if err := yaml.UnmarshalStrict(data, &plugin); err != nil {
		return fmt.Errorf("not a krew manifest with only known fields: %w", err)
	}
	for i, p := range plugin.Spec.Platforms {
		if p.Selector == nil {
			return fmt.Errorf("spec.platforms[%d] has no selector", i)
		}
	}
	fmt.Printf("manifestcheck: %s: plugin %q %s, %d platform(s), only known fields\n",
		path, plugin.Name, plugin.Spec.Version, len(plugin.Spec.Platforms))
	return nil
}

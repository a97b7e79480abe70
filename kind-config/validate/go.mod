// The kind version podmigrate's kind cluster is made and checked with: kind-config/build-kind.sh builds
// this kind's CLI (tools.go), and the validator (main.go) runs this kind's config loader, validator and
// generators. The module path is under sigs.k8s.io/kind/pkg/cluster only so that Go lets main.go import
// kind's internal config packages (see main.go); this module is not part of kind.
module sigs.k8s.io/kind/pkg/cluster/podmigratevalidate

go 1.26

require (
	github.com/pelletier/go-toml v1.9.5
	go.yaml.in/yaml/v3 v3.0.4
	sigs.k8s.io/kind v0.33.0
)

require (
	al.essio.dev/pkg/shellescape v1.5.1 // indirect
	github.com/BurntSushi/toml v1.4.0 // indirect
	github.com/evanphx/json-patch/v5 v5.6.0 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/spf13/cobra v1.8.0 // indirect
	github.com/spf13/pflag v1.0.5 // indirect
	golang.org/x/sys v0.6.0 // indirect
	sigs.k8s.io/yaml v1.4.0 // indirect
)

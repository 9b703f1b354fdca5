package cluster

import (
	"context"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ImageConfig says how to build the node image.
type ImageConfig struct {
	// Src is the RingKV module root whose ./cmd/kvd is built.
	Src string
	// Dockerfile is copied into the build context; it must COPY kvd.
	Dockerfile string
	// ContextDir receives the static kvd and the Dockerfile.
	ContextDir string
	// Tag names the image, e.g. "ringkv-jepsen:dev".
	Tag string
	// BuildTags are extra Go build tags (e.g. jepsen_fault_staleread).
	BuildTags []string
	// Race builds kvd with the race detector (statically linked with cgo).
	Race bool
	// Binary, when set, is used instead of building kvd; it must be static.
	Binary string
}

// BuildImage builds a static kvd and the image around it with the legacy
// builder (no registry needed: the image is FROM scratch).
func BuildImage(ctx context.Context, d *Docker, cfg ImageConfig, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.ContextDir, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(cfg.ContextDir, "kvd")
	if cfg.Binary != "" {
		b, err := os.ReadFile(cfg.Binary)
		if err != nil {
			return err
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			return err
		}
	} else if err := BuildKVD(ctx, cfg, bin, log); err != nil {
		return err
	}
	if err := checkStatic(bin); err != nil {
		return err
	}
	df, err := os.ReadFile(cfg.Dockerfile)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.ContextDir, "Dockerfile"), df, 0o644); err != nil {
		return err
	}
	start := time.Now()
	bd := *d
	bd.Env = append(append([]string(nil), d.Env...), "DOCKER_BUILDKIT=0")
	if _, err := bd.Run(ctx, "build", "-q", "--label", Label, "-t", cfg.Tag, cfg.ContextDir); err != nil {
		return fmt.Errorf("cluster: docker build: %w", err)
	}
	log.Info("built image", "tag", cfg.Tag, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// BuildKVD compiles cfg.Src/cmd/kvd into out as a static binary.
func BuildKVD(ctx context.Context, cfg ImageConfig, out string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tags := append([]string{"netgo", "osusergo"}, cfg.BuildTags...)
	args := []string{"build", "-trimpath", "-tags", strings.Join(tags, ","),
		"-ldflags", "-X github.com/ringkv/ringkv/node.Version=jepsen"}
	env := []string{"CGO_ENABLED=0"}
	if cfg.Race {
		// The race runtime needs cgo; link it statically so the binary
		// runs in a scratch image.
		env = []string{"CGO_ENABLED=1"}
		args = []string{"build", "-race", "-trimpath", "-tags", strings.Join(tags, ","),
			"-ldflags", "-X github.com/ringkv/ringkv/node.Version=jepsen-race -linkmode external -extldflags -static"}
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	args = append(args, "-o", abs, "./cmd/kvd")
	start := time.Now()
	if _, err := runIn(ctx, cfg.Src, env, "go", args...); err != nil {
		return fmt.Errorf("cluster: build kvd: %w", err)
	}
	log.Info("built kvd", "race", cfg.Race, "tags", strings.Join(cfg.BuildTags, ","), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// checkStatic refuses a binary that needs a dynamic loader: it would not
// start in a scratch image.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("cluster: %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("cluster: %s is dynamically linked; build it with CGO_ENABLED=0 (or -race with -extldflags -static)", path)
		}
	}
	return nil
}

// BinaryTags returns the Go build tags kvd at path was built with (from its
// embedded build information), so a suite can check that the binary in the
// image is the one it means to test.
func BinaryTags(path string) ([]string, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster: build info of %s: %w", path, err)
	}
	for _, s := range bi.Settings {
		if s.Key == "-tags" {
			return strings.Split(s.Value, ","), nil
		}
	}
	return nil, nil
}

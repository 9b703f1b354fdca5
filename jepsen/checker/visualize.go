package checker

import (
	"fmt"
	"os"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/ringkv/ringkv/jepsen/history"
)

// Visualize writes porcupine's HTML view of the strong operations of keys
// (every key when keys is empty) to path, with the nemesis windows drawn as
// annotations. Keys that are not linearizable show where the search got
// stuck.
func Visualize(path string, ops []*history.Op, windows []history.Window, keys []string, timeout time.Duration) error {
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	byKey := ByKey(ops)
	var pops []porcupine.Operation
	for _, k := range sortedKeys(byKey) {
		if len(want) > 0 && !want[k] {
			continue
		}
		pops = append(pops, prepare(byKey[k])...)
	}
	_, info := porcupine.CheckOperationsVerbose(registerModel, pops, timeout)
	info.AddAnnotations(annotations(windows))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := porcupine.Visualize(registerModel, info, f); err != nil {
		f.Close()
		return fmt.Errorf("checker: visualize: %w", err)
	}
	return f.Close()
}

func annotations(windows []history.Window) []porcupine.Annotation {
	var out []porcupine.Annotation
	for _, w := range windows {
		end := w.End
		if end == 0 {
			end = w.Start
		}
		detail := w.Detail
		if w.Err != "" {
			detail += " (error: " + w.Err + ")"
		}
		out = append(out, porcupine.Annotation{
			Tag:             "nemesis",
			Start:           w.Start,
			End:             end,
			Description:     w.Nemesis,
			Details:         fmt.Sprintf("%s [%.1fs..%.1fs]", detail, float64(w.Start)/1e9, float64(end)/1e9),
			BackgroundColor: "#f6c6c6",
		})
	}
	return out
}

package checker

import (
	"github.com/anishathalye/porcupine"

	"github.com/ringkv/ringkv/jepsen/history"
)

// prepare turns one key's strong operations into porcupine operations.
//
// Failed operations did not happen and are left out, as are eventual reads
// (checked elsewhere). An unknown write may have happened at any moment
// after its call, which porcupine models by an open return. Two rewrites keep
// the search small without changing the verdict (values are unique per key):
//
//   - An unknown write whose value no definite strong operation ever saw is
//     dropped: had it taken effect, nothing observed it before the next write
//     replaced it (a read would have returned it, a failed swap would have
//     reported it, a swap expecting it would have named it), and a history
//     that is linearizable without it stays so with it linearized last.
//   - An unknown write whose value was seen gets the earliest return time of
//     the operations that saw it: it must have taken effect before they
//     ended.
func prepare(ops []*history.Op) []porcupine.Operation {
	seen := map[string]int64{} // value -> earliest return of an op that saw it
	note := func(v string, at int64) {
		if t, ok := seen[v]; !ok || at < t {
			seen[v] = at
		}
	}
	for _, o := range ops {
		if o.Outcome != history.OutcomeOK {
			continue
		}
		switch {
		case o.Kind == history.KindGet && o.Found:
			note(o.Out, o.Return)
		case o.Kind == history.KindCAS && o.Succeeded && !o.ExpectAbsent:
			note(o.Expect, o.Return)
		case o.Kind == history.KindCAS && !o.Succeeded && o.CurExists:
			note(o.CurValue, o.Return)
		}
	}
	var out []porcupine.Operation
	for _, o := range ops {
		if o.Kind == history.KindEventualGet || o.Outcome == history.OutcomeFail || o.Outcome == "" {
			continue
		}
		in := input{Key: o.Key, Kind: o.Kind, Value: o.Value, Expect: o.Expect, ExpectAbsent: o.ExpectAbsent}
		outp := output{Found: o.Found, Value: o.Out, Succeeded: o.Succeeded, CurExists: o.CurExists, CurValue: o.CurValue}
		ret := o.Return
		if o.Outcome == history.OutcomeUnknown {
			if !o.Writes() {
				continue
			}
			t, ok := seen[o.Value]
			if !ok {
				continue
			}
			outp = output{Unknown: true}
			// A read that ended before this write began makes the history
			// illegal; keep the interval well-formed and let porcupine say so.
			ret = max(t, o.Call+1)
		}
		out = append(out, porcupine.Operation{
			ClientId: o.Client,
			Input:    in,
			Call:     o.Call,
			Output:   outp,
			Return:   ret,
			Metadata: meta{op: o},
		})
	}
	return out
}

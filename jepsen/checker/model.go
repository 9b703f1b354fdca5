package checker

import (
	"fmt"

	"github.com/anishathalye/porcupine"

	"github.com/ringkv/ringkv/jepsen/history"
)

// state is one key's value in the register model.
type state struct {
	Exists bool
	Value  string
}

// input is what an operation asked for.
type input struct {
	Key          string
	Kind         history.Kind
	Value        string
	Expect       string
	ExpectAbsent bool
}

// output is what came back. Unknown writes may or may not have happened.
type output struct {
	Unknown   bool
	Found     bool
	Value     string
	Succeeded bool
	CurExists bool
	CurValue  string
}

// meta travels with an operation into the visualization.
type meta struct {
	op *history.Op
}

// registerModel is a single key holding a string or nothing: strong get, put
// and compare-and-swap, with unknown writes allowed to take effect or not.
var registerModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		idx := map[string]int{}
		var out [][]porcupine.Operation
		for _, o := range h {
			k := o.Input.(input).Key
			i, ok := idx[k]
			if !ok {
				i = len(out)
				idx[k] = i
				out = append(out, nil)
			}
			out[i] = append(out[i], o)
		}
		return out
	},
	Init: func() any { return state{} },
	Step: func(st, in, out any) (bool, any) {
		s, i, o := st.(state), in.(input), out.(output)
		return step(s, i, o)
	},
	Equal: func(a, b any) bool { return a.(state) == b.(state) },
	DescribeOperation: func(in, out any) string {
		return describe(in.(input), out.(output))
	},
	DescribeState: func(st any) string {
		s := st.(state)
		if !s.Exists {
			return "(absent)"
		}
		return fmt.Sprintf("%q", s.Value)
	},
	DescribeOperationMetadata: func(m any) string {
		if mm, ok := m.(meta); ok && mm.op != nil {
			return mm.op.String()
		}
		return ""
	},
}

func step(s state, i input, o output) (bool, state) {
	switch i.Kind {
	case history.KindGet:
		if o.Found != s.Exists {
			return false, s
		}
		return !o.Found || o.Value == s.Value, s
	case history.KindPut:
		return true, state{Exists: true, Value: i.Value}
	case history.KindCAS:
		holds := !s.Exists
		if !i.ExpectAbsent {
			holds = s.Exists && s.Value == i.Expect
		}
		next := s
		if holds {
			next = state{Exists: true, Value: i.Value}
		}
		if o.Unknown {
			return true, next
		}
		if o.Succeeded != holds {
			return false, s
		}
		if !o.Succeeded {
			// A failed swap reports the state it saw: that is a read.
			return o.CurExists == s.Exists && (!s.Exists || o.CurValue == s.Value), s
		}
		return true, next
	}
	return false, s
}

func describe(i input, o output) string {
	switch i.Kind {
	case history.KindGet:
		if o.Found {
			return fmt.Sprintf("get() -> %q", o.Value)
		}
		return "get() -> absent"
	case history.KindPut:
		if o.Unknown {
			return fmt.Sprintf("put(%q) -> ?", i.Value)
		}
		return fmt.Sprintf("put(%q)", i.Value)
	case history.KindCAS:
		cond := fmt.Sprintf("%q", i.Expect)
		if i.ExpectAbsent {
			cond = "absent"
		}
		switch {
		case o.Unknown:
			return fmt.Sprintf("cas(%s -> %q) -> ?", cond, i.Value)
		case o.Succeeded:
			return fmt.Sprintf("cas(%s -> %q) -> ok", cond, i.Value)
		case o.CurExists:
			return fmt.Sprintf("cas(%s -> %q) -> failed, saw %q", cond, i.Value, o.CurValue)
		default:
			return fmt.Sprintf("cas(%s -> %q) -> failed, saw absent", cond, i.Value)
		}
	}
	return string(i.Kind)
}

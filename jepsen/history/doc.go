// Package history records what the clients of a fault run did and saw: one
// Op per operation, written as JSON lines per client so that a run can be
// re-checked later from its folder alone.
//
// # Guarantee
//
// An Op says what was asked, when (nanoseconds since the run started, from a
// monotonic clock), and what came back, classified by Outcome:
//
//   - OutcomeOK: a definite answer. Reads that found nothing are OK with
//     Found false.
//   - OutcomeFail: the operation certainly did not take effect (a write that
//     failed with client.ErrUnavailable, or any failed read).
//   - OutcomeUnknown: a write that may have taken effect, or may yet
//     (client.ErrOutcomeUnknown, a timeout). It is never counted as a
//     failure; the checker treats it as possibly applied at any time after
//     its call.
//
// # Caller's duties
//
// Give every client a distinct Client number and every Op a unique ID (a
// Recorder does both). Values written to a key must be unique per key, so
// that a read names the write it saw.
//
// # Example
//
//	rec := history.NewRecorder(time.Now())
//	op := rec.Begin(3, "r/7", history.KindPut)
//	op.Value = "3-41"
//	_, err := c.Put(ctx, []byte(op.Key), []byte(op.Value))
//	rec.End(op, history.Classify(op.Kind, err), err)
package history

package history

import (
	"errors"

	"github.com/ringkv/ringkv/client"
)

// Classify maps a client error to an outcome. A nil error and a read that
// found nothing are OK. A failed read never took effect. A write failed only
// when the client says it certainly was not applied (ErrUnavailable); every
// other error of a write, timeouts included, leaves its outcome unknown.
func Classify(kind Kind, err error) Outcome {
	switch {
	case err == nil:
		return OutcomeOK
	case kind == KindGet || kind == KindEventualGet:
		if errors.Is(err, client.ErrNotFound) {
			return OutcomeOK
		}
		return OutcomeFail
	case errors.Is(err, client.ErrUnavailable) && !errors.Is(err, client.ErrOutcomeUnknown):
		return OutcomeFail
	default:
		return OutcomeUnknown
	}
}

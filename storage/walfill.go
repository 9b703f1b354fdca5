package storage

import (
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Zero-filled write-ahead logs.
//
// Every synced log write ends in an fdatasync of Pebble's WAL file. When the
// write extends the file, that fdatasync must also commit the file's new size
// to the filesystem journal; when it overwrites blocks that are already part
// of the file, it writes the data alone. On this project's ext4 machine a
// synced 200-byte append took 146-189 us at p50 and the same write over
// zeros written earlier 94-114 us (and a write into fallocate'd, never
// written blocks costs as much as an append as soon as it starts a new 4 KiB
// block). Pebble knows this and recycles old WAL files, but only once a
// memtable has been flushed: a fresh node, and every WAL that grows past the
// size of the one it recycled, appends.
//
// walFillFS hands Pebble WAL files that keep up to `ahead` bytes written
// with zeros (and synced) beyond the log's end, by a goroutine per file, so
// that the log's own writes overwrite and their fdatasync skips the journal.
// Pebble reads a zeroed chunk as the end of a log (record.ErrZeroedChunk,
// "usually occurs due to log file preallocation"), exactly as it treats the
// stale tail of a recycled file.
//
// Correctness never depends on the filler: an fdatasync of a write past the
// filled region still commits the size it needs, only slower. What the code
// below must guarantee is that zeros never land on a byte the log wrote. The
// filler writes only beyond `end`, the end of every write Pebble has begun
// (reserved under the lock before the write is issued), and a write that
// would reach into a range being filled waits for that fill to finish.
type walFillFS struct {
	vfs.FS
	ahead int64
}

// walCategory is the write category Pebble creates and recycles WAL files
// with (wal/standalone_manager.go).
const walCategory vfs.DiskWriteCategory = "pebble-wal"

// walFillPiece is how much the filler writes before it syncs. A log
// fdatasync that runs meanwhile also writes the filler's dirty pages, so a
// piece bounds that extra work.
const walFillPiece = 256 << 10

// walFillSlack is how far beyond the log's end the filler starts when the
// log has reached the filled region (a new file, or a log that outran the
// fill), so that the log's next writes do not wait for the piece it is
// writing.
const walFillSlack = 64 << 10

// walZeros is what the filler writes; nothing writes into it.
var walZeros = make([]byte, walFillPiece)

func (fs walFillFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil || category != walCategory {
		return f, err
	}
	return newWALFillFile(f, 0, fs.ahead), nil
}

func (fs walFillFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, category)
	if err != nil || category != walCategory {
		return f, err
	}
	// A recycled file is already written up to its size; fill beyond it.
	st, err := f.Stat()
	if err != nil {
		return f, nil // unfilled: only slower
	}
	return newWALFillFile(f, st.Size(), fs.ahead), nil
}

// walFillFile is a WAL file whose region beyond the log's end is filled with
// zeros ahead of the log by its own goroutine.
type walFillFile struct {
	vfs.File
	ahead int64
	kick  chan struct{} // capacity 1: a fill is wanted
	stop  chan struct{} // closed by Close
	done  chan struct{} // closed when the filler has exited

	mu   sync.Mutex
	cond sync.Cond
	// end is the offset after the last write begun: Pebble writes the log
	// sequentially, so every byte it wrote or is writing lies below end.
	end int64
	// filled: the filler has written and synced zeros up to here. Below
	// it lie the log, those zeros, a recycled file's old content, or the
	// hole left where the filler skipped ahead of a log that caught up
	// with it.
	filled int64
	// fillFrom is where the fill in flight starts; -1 when none is.
	fillFrom int64
}

func newWALFillFile(f vfs.File, size, ahead int64) *walFillFile {
	w := &walFillFile{
		File:     f,
		ahead:    ahead,
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		filled:   size,
		fillFrom: -1,
	}
	w.cond.L = &w.mu
	w.kick <- struct{}{}
	go w.fill()
	return w
}

// Write writes p at the log's end, as the file it wraps would. It waits only
// when p would reach into the range the filler is writing right now.
func (w *walFillFile) Write(p []byte) (int, error) {
	w.mu.Lock()
	for w.fillFrom >= 0 && w.end+int64(len(p)) > w.fillFrom {
		w.cond.Wait()
	}
	w.end += int64(len(p))
	want := w.end+w.ahead/2 > w.filled
	w.mu.Unlock()
	if want {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return w.File.Write(p)
}

// Close stops the filler, waits for it, and closes the file: the filler
// must never write through a descriptor that may already name another file.
func (w *walFillFile) Close() error {
	close(w.stop)
	<-w.done
	return w.File.Close()
}

// fill runs until Close, filling up to end+ahead with zeros whenever a write
// asks for it: from where it stopped, or walFillSlack beyond the log's end
// if the log has reached that point.
func (w *walFillFile) fill() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		case <-w.kick:
		}
		for {
			w.mu.Lock()
			from := w.filled
			if from <= w.end {
				// Behind (a new file, or a log that outran the fill):
				// leave the log room, so its next writes do not wait
				// for this piece. [end, from) stays a hole the log
				// writes into as it would without the filler.
				from = w.end + walFillSlack
			}
			to := min(w.end+w.ahead, from+walFillPiece)
			if to <= from {
				w.mu.Unlock()
				break
			}
			w.fillFrom = from
			w.mu.Unlock()

			_, err := w.File.WriteAt(walZeros[:to-from], from)
			if err == nil {
				err = w.File.SyncData()
			}

			w.mu.Lock()
			w.fillFrom = -1
			if err == nil {
				w.filled = to
			}
			w.cond.Broadcast()
			w.mu.Unlock()
			if err != nil {
				// The log's own writes will meet the same error, or
				// succeed without the fill; either way stop trying.
				<-w.stop
				return
			}
			select {
			case <-w.stop:
				return
			default:
			}
		}
	}
}

package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/geofs/geofs/store"
)

// Server serves a Site over HTTP on a unix socket.
type Server struct {
	site Site
	log  *slog.Logger
	srv  *http.Server
	ln   net.Listener
	path string
}

// Listen starts serving site on path (see SocketPath), replacing a stale
// socket left by a killed process.
func Listen(path string, site Site, log *slog.Logger) (*Server, error) {
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, store.ErrLocked)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	os.Chmod(path, 0o600)
	s := &Server{site: site, log: log, ln: ln, path: path}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /versions", s.versions)
	mux.HandleFunc("GET /cat", s.cat)
	mux.HandleFunc("POST /restore", s.restore)
	mux.HandleFunc("GET /log", s.logEntries)
	mux.HandleFunc("GET /fsck", s.fsck)
	mux.HandleFunc("GET /status", s.status)
	mux.HandleFunc("POST /pin", s.pin)
	mux.HandleFunc("POST /unpin", s.unpin)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	os.Remove(s.path)
	return err
}

// Errors travel as a status code and a text body; the client turns known
// codes back into sentinels so that exit codes stay right.
func (s *Server) fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, store.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, store.ErrCorrupt):
		code = http.StatusUnprocessableEntity
	}
	http.Error(w, err.Error(), code)
}

func (s *Server) writeJSON(w http.ResponseWriter, v any, err error) {
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (s *Server) versions(w http.ResponseWriter, r *http.Request) {
	v, err := s.site.Versions(r.Context(), r.URL.Query().Get("path"))
	s.writeJSON(w, v, err)
}

func (s *Server) cat(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	// Buffer the first bytes so an early error still gets an error status.
	bw := &lazyWriter{w: w}
	if err := s.site.Cat(r.Context(), q.Get("path"), q.Get("version"), bw); err != nil {
		if !bw.started {
			s.fail(w, err)
			return
		}
		s.log.Error("cat failed mid-stream", "path", q.Get("path"), "err", err)
		panic(http.ErrAbortHandler) // cut the stream so the client sees a failure
	}
}

type lazyWriter struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	l.started = true
	return l.w.Write(p)
}

func (s *Server) restore(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v, err := s.site.Restore(r.Context(), q.Get("path"), q.Get("version"))
	s.writeJSON(w, v, err)
}

func (s *Server) logEntries(w http.ResponseWriter, r *http.Request) {
	from, _ := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	err := s.site.Log(r.Context(), from, func(e LogEntry) error { return enc.Encode(e) })
	if err != nil {
		enc.Encode(map[string]string{"error": err.Error()})
	}
	bw.Flush()
}

func (s *Server) fsck(w http.ResponseWriter, r *http.Request) {
	repair, _ := strconv.ParseBool(r.URL.Query().Get("repair"))
	rep, err := s.site.Fsck(r.Context(), repair)
	s.writeJSON(w, rep, err)
}

func (s *Server) pin(w http.ResponseWriter, r *http.Request) {
	res, err := s.site.Pin(r.Context(), r.URL.Query().Get("path"))
	s.writeJSON(w, res, err)
}

func (s *Server) unpin(w http.ResponseWriter, r *http.Request) {
	err := s.site.Unpin(r.Context(), r.URL.Query().Get("path"))
	s.writeJSON(w, struct{}{}, err)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.site.Status(r.Context())
	s.writeJSON(w, st, err)
}

var _ io.Writer = (*lazyWriter)(nil)

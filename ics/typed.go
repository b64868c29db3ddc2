package ics

import (
	"context"
	"encoding"
	"encoding/json"
	"fmt"

	"github.com/clusterinfra/ci/node"
)

// Codec turns values of T into bytes and back.
type Codec[T any] interface {
	Encode(v T) ([]byte, error)
	Decode(b []byte) (T, error)
}

// codecFor picks the codec for T: raw bytes for []byte, the type's own
// binary encoding when it has one, and JSON otherwise.
func codecFor[T any]() Codec[T] {
	var zero T
	switch any(zero).(type) {
	case []byte:
		return rawCodec[T]{}
	}
	if _, ok := any(&zero).(encoding.BinaryUnmarshaler); ok {
		if _, ok := any(zero).(encoding.BinaryMarshaler); ok {
			return binaryCodec[T]{}
		}
	}
	return jsonCodec[T]{}
}

type rawCodec[T any] struct{}

func (rawCodec[T]) Encode(v T) ([]byte, error) { return any(v).([]byte), nil }
func (rawCodec[T]) Decode(b []byte) (T, error) { return any(b).(T), nil }

type binaryCodec[T any] struct{}

func (binaryCodec[T]) Encode(v T) ([]byte, error) {
	return any(v).(encoding.BinaryMarshaler).MarshalBinary()
}
func (binaryCodec[T]) Decode(b []byte) (T, error) {
	var v T
	err := any(&v).(encoding.BinaryUnmarshaler).UnmarshalBinary(b)
	return v, err
}

type jsonCodec[T any] struct{}

func (jsonCodec[T]) Encode(v T) ([]byte, error) { return json.Marshal(v) }
func (jsonCodec[T]) Decode(b []byte) (T, error) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err
}

// Service is a typed RPC service: one Go declaration names it and fixes
// its request and reply types, so no stub generator is needed:
//
//	var Echo = ics.NewService[[]byte, []byte]("echo")
//
//	Echo.Serve(ep, func(r *ics.Request, req []byte) ([]byte, error) { return req, nil })
//	Echo.Call(ep, 2, []byte("hi"), ics.CallOpts{}, func(resp []byte, err error) { ... })
type Service[Req, Resp any] struct {
	Name string
	Req  Codec[Req]
	Resp Codec[Resp]
}

// NewService declares a service with the default codecs.
func NewService[Req, Resp any](name string) Service[Req, Resp] {
	return Service[Req, Resp]{Name: name, Req: codecFor[Req](), Resp: codecFor[Resp]()}
}

// Serve registers a handler that answers at once.
func (s Service[Req, Resp]) Serve(e *Endpoint, h func(r *Request, req Req) (Resp, error)) error {
	return s.ServeAsync(e, func(r *Request, req Req, reply func(Resp, error)) { reply(h(r, req)) })
}

// ServeAsync registers a handler that may answer later, through reply
// (exactly once).
func (s Service[Req, Resp]) ServeAsync(e *Endpoint, h func(r *Request, req Req, reply func(Resp, error))) error {
	return e.Handle(s.Name, func(r *Request, payload []byte) {
		req, err := s.Req.Decode(payload)
		if err != nil {
			_ = r.Fail(fmt.Errorf("%w: request: %v", ErrCodec, err))
			return
		}
		h(r, req, func(resp Resp, err error) {
			if err != nil {
				_ = r.Fail(err)
				return
			}
			b, err := s.Resp.Encode(resp)
			if err != nil {
				_ = r.Fail(fmt.Errorf("%w: reply: %v", ErrCodec, err))
				return
			}
			_ = r.Reply(b)
		})
	})
}

// Call calls the service on peer; done gets the decoded reply or the
// error, exactly once. An error returned here means no call was made.
func (s Service[Req, Resp]) Call(e *Endpoint, peer node.ID, req Req, opts CallOpts, done func(Resp, error)) (*Call, error) {
	b, err := s.Req.Encode(req)
	if err != nil {
		return nil, fmt.Errorf("%w: request: %v", ErrCodec, err)
	}
	return e.Call(peer, s.Name, b, opts, func(resp []byte, err error) {
		var v Resp
		if err == nil {
			v, err = s.Resp.Decode(resp)
			if err != nil {
				err = fmt.Errorf("%w: reply: %v", ErrCodec, err)
			}
		}
		done(v, err)
	})
}

// Message is a typed one-way message.
type Message[T any] struct {
	Name  string
	Codec Codec[T]
}

// NewMessage declares a one-way message with the default codec.
func NewMessage[T any](name string) Message[T] {
	return Message[T]{Name: name, Codec: codecFor[T]()}
}

// Send sends v to peer on ch.
func (m Message[T]) Send(e *Endpoint, peer node.ID, ch Channel, v T) error {
	b, err := m.Codec.Encode(v)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCodec, err)
	}
	return e.Send(peer, ch, m.Name, b)
}

// Handle registers the receiver; undecodable messages are dropped and
// counted.
func (m Message[T]) Handle(e *Endpoint, f func(from node.ID, v T)) error {
	return e.HandleMessage(m.Name, func(from node.ID, b []byte) {
		v, err := m.Codec.Decode(b)
		if err != nil {
			e.drop("undecodable")
			return
		}
		f(from, v)
	})
}

// Loop runs functions on a node's goroutine and waits for results: the
// bridge between code on other goroutines and an endpoint, which may only
// be touched from its node's callbacks. Both runtimes have one: the real
// runtime's (host.Node.Loop) runs the function at once on the caller's
// goroutine if the node is idle, posts it to the event loop otherwise, and
// blocks; the simulator's (sim.World.Loop) runs the world until the wait
// is over, on the goroutine that drives it.
type Loop interface {
	// Do runs f on the node's goroutine.
	Do(f func()) error
	// Wait returns when done is closed, or with ctx's error.
	Wait(ctx context.Context, done <-chan struct{}) error
}

// CallSync is the synchronous RPC: it calls the service on peer and waits
// for the reply. If ctx ends first, the call is canceled, and the server's
// handler is told (Request.OnCancel). Use it from outside the node's
// callbacks, never from inside one.
func CallSync[Req, Resp any](ctx context.Context, l Loop, e *Endpoint, s Service[Req, Resp], peer node.ID, req Req, opts CallOpts) (Resp, error) {
	// One allocation holds what the loop's side and the caller share
	// (rather than one per captured variable): it is on the path of every
	// synchronous call.
	sc := &syncCall[Resp]{done: make(chan struct{})}
	err := l.Do(func() {
		var err error
		sc.call, err = s.Call(e, peer, req, opts, sc.finish)
		if err != nil {
			sc.finish(sc.resp, err)
		}
	})
	if err != nil {
		return sc.resp, err
	}
	if err := l.Wait(ctx, sc.done); err != nil {
		_ = l.Do(func() {
			if sc.call != nil {
				sc.call.Cancel()
			}
		})
		_ = l.Wait(context.Background(), sc.done)
	}
	return sc.resp, sc.err
}

// syncCall is one CallSync in progress. Its fields are written on the
// node's goroutine before done is closed and read by the caller after.
type syncCall[Resp any] struct {
	resp Resp
	err  error
	call *Call
	done chan struct{}
}

func (sc *syncCall[Resp]) finish(v Resp, err error) {
	sc.resp, sc.err = v, err
	close(sc.done)
}

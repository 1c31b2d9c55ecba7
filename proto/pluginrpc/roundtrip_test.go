package pluginrpc

import (
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/structpb"

	"alknet.dev/alknet/proto/pluginpb"
)

// fill sets every field of m — nested messages, lists, maps and oneofs
// included — to a non-zero value, so a round trip covers each field the
// schema has, including ones added later.
func fill(m protoreflect.Message, depth int) {
	if m.Descriptor().FullName() == "google.protobuf.Value" {
		v := m.Interface().(*structpb.Value)
		s, _ := structpb.NewValue(map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer", "maximum": 5}}})
		proto.Merge(v, s)
		return
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() && m.WhichOneof(o) != nil {
			continue // one member of a oneof at a time
		}
		switch {
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range 2 {
				if fd.Kind() == protoreflect.MessageKind {
					e := l.NewElement()
					fill(e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(scalar(fd, i))
				}
			}
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			k := scalar(fd.MapKey(), i).MapKey()
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v := mp.NewValue()
				fill(v.Message(), depth+1)
				mp.Set(k, v)
			} else {
				mp.Set(k, scalar(fd.MapValue(), i))
			}
		case fd.Kind() == protoreflect.MessageKind:
			if depth < 4 {
				fill(m.Mutable(fd).Message(), depth+1)
			}
		default:
			m.Set(fd, scalar(fd, i))
		}
	}
}

func scalar(fd protoreflect.FieldDescriptor, i int) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("s" + string(rune('a'+i)))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(`{"k":[1,2]}`))
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(uint32(7 + i))
	case protoreflect.Uint64Kind:
		return protoreflect.ValueOfUint64(1<<40 + uint64(i))
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(-(1<<40 + int64(i)))
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(fd.Enum().Values().Get(fd.Enum().Values().Len() - 1).Number())
	}
	panic("fill: unhandled kind " + fd.Kind().String())
}

// Every message of plugin.proto survives the connection's codec with
// every field set, and the manifest its JSON form.
func TestEveryMessageRoundTrips(t *testing.T) {
	msgs := pluginpb.File_plugin_proto.Messages()
	n := 0
	var walk func(protoreflect.MessageDescriptors)
	walk = func(ds protoreflect.MessageDescriptors) {
		for i := range ds.Len() {
			d := ds.Get(i)
			if d.IsMapEntry() {
				continue
			}
			walk(d.Messages())
			mt, err := protoregistryFind(d)
			if err != nil {
				t.Fatalf("%s: %v", d.FullName(), err)
			}
			in := mt.New()
			fill(in, 0)
			n++
			bs, err := Codec{}.Marshal(in.Interface())
			if err != nil {
				t.Fatalf("%s: marshal: %v", d.FullName(), err)
			}
			out := mt.New().Interface()
			if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bs.Materialize())}, out); err != nil {
				t.Fatalf("%s: unmarshal: %v", d.FullName(), err)
			}
			if !proto.Equal(in.Interface(), out) {
				t.Fatalf("%s changed in a round trip:\n%v\n%v", d.FullName(), in.Interface(), out)
			}
			bs.Free()
		}
	}
	walk(msgs)
	if n < 25 {
		t.Fatalf("only %d messages checked", n)
	}

	m := &pluginpb.Manifest{}
	fill(m.ProtoReflect(), 0)
	b, err := MarshalManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalManifest(b)
	if err != nil || !proto.Equal(back, m) {
		t.Fatalf("manifest JSON round trip: %v\n%s", err, b)
	}
}

func protoregistryFind(d protoreflect.MessageDescriptor) (protoreflect.MessageType, error) {
	return protoregistry.GlobalTypes.FindMessageByName(d.FullName())
}

package io.podkeeper.clients;

import com.twitter.finagle.Addr;
import com.twitter.finagle.Address;
import com.twitter.finagle.addr.WeightedAddress;
import com.twitter.finagle.partitioning.zk.ZkMetadata;
import com.twitter.finagle.serverset2.Zk2Resolver;
import com.twitter.finagle.stats.NullStatsReceiver;
import com.twitter.util.Duration;
import com.twitter.util.Var;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import scala.Option;
import scala.Tuple2;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.BoxedUnit;

/**
 * Finagle's own ServerSet reader: the zk2 resolver (Zk2Resolver), which lists member_ and
 * vector_ children, filters on ALIVE, weighs members by the vectors and stabilizes updates.
 * Prints one JSON object per address update until stdin closes.
 *
 * <pre>
 * resolve CONNECT PATH
 * </pre>
 */
public final class ServerSetClient {
    public static void main(String[] args) throws Exception {
        if (!args[0].equals("resolve")) {
            throw new IllegalArgumentException("unknown mode " + args[0]);
        }
        // A short stabilization window so the test sees updates quickly; removals are still
        // delayed by it, as in production.
        Zk2Resolver resolver = new Zk2Resolver(
                NullStatsReceiver.get(), Duration.fromMilliseconds(200), Duration.fromSeconds(300));
        Var<Addr> addr = resolver.bind(args[1] + "!" + args[2]);
        Object lock = new Object();
        addr.changes().respond(a -> {
            synchronized (lock) {
                System.out.println(describe(a));
                System.out.flush();
            }
            return BoxedUnit.UNIT;
        });
        while (System.in.read() != -1) {
            // until the test closes our stdin
        }
        System.exit(0);
    }

    private static String describe(Addr a) {
        if (!(a instanceof Addr.Bound)) {
            return "{\"state\":\"" + a.getClass().getSimpleName().replace("$", "").toLowerCase() + "\"}";
        }
        Addr.Bound bound = (Addr.Bound) a;
        List<String> entries = new ArrayList<>();
        for (Address address : CollectionConverters.asJava(bound.addrs())) {
            Tuple2<Address, Object> weighted = WeightedAddress.extract(address);
            Address inner = weighted._1();
            double weight = (Double) weighted._2();
            if (!(inner instanceof Address.Inet)) {
                continue;
            }
            Address.Inet inet = (Address.Inet) inner;
            StringBuilder b = new StringBuilder("{");
            b.append("\"host\":\"").append(inet.addr().getHostString()).append("\",");
            b.append("\"port\":").append(inet.addr().getPort()).append(',');
            b.append("\"weight\":").append(weight);
            Option<ZkMetadata> zk = ZkMetadata.fromAddrMetadata(inet.metadata());
            if (zk.isDefined()) {
                Option<Object> shard = zk.get().shardId();
                if (shard.isDefined()) {
                    b.append(",\"shard\":").append(shard.get());
                }
                Map<String, String> md = new TreeMap<>(CollectionConverters.asJava(zk.get().metadata()));
                b.append(",\"metadata\":{");
                boolean first = true;
                for (Map.Entry<String, String> e : md.entrySet()) {
                    if (!first) {
                        b.append(',');
                    }
                    first = false;
                    b.append(quote(e.getKey())).append(':').append(quote(e.getValue()));
                }
                b.append('}');
            }
            entries.add(b.append('}').toString());
        }
        entries.sort(null);
        return "{\"state\":\"bound\",\"addresses\":[" + String.join(",", entries) + "]}";
    }

    private static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }
}

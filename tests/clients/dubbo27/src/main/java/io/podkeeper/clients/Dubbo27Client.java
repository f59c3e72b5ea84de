package io.podkeeper.clients;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.lang.reflect.Method;
import org.apache.dubbo.common.URL;
import org.apache.dubbo.common.extension.ExtensionLoader;
import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.ConfigCenterConfig;
import org.apache.dubbo.config.ReferenceConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.apache.dubbo.registry.NotifyListener;
import org.apache.dubbo.registry.Registry;
import org.apache.dubbo.registry.client.migration.MigrationInvoker;
import org.apache.dubbo.registry.zookeeper.ZookeeperRegistryFactory;
import org.apache.dubbo.rpc.Invoker;
import org.apache.dubbo.rpc.cluster.ClusterInvoker;
import org.apache.dubbo.rpc.cluster.LoadBalance;
import org.apache.dubbo.rpc.service.GenericService;
import org.apache.dubbo.remoting.zookeeper.curator.CuratorZookeeperTransporter;

/**
 * Dubbo 2.7's interface-level ZooKeeper registry (ZookeeperRegistry over Curator 4): the same
 * programs as DubboClient, against the 2.7 API. Prints one JSON object per line on stdout.
 *
 * <pre>
 * consume CONNECT ROOT INTERFACE GROUP VERSION   subscribe; one line per notification, until stdin closes
 *                                                (GROUP / VERSION "-" for none, "*" for any)
 * provide CONNECT ROOT PROVIDER_URL              register; print the URL; unregister when stdin closes
 * reference CONNECT ROOT INTERFACE GROUP VERSION a real consumer; see reference()
 * </pre>
 */
public final class Dubbo27Client {
    public static void main(String[] args) throws Exception {
        if (args[0].equals("reference")) {
            reference(args[1], args[2], args[3], args[4], args[5]);
            System.exit(0);
        }
        Registry registry = registry(args[1], args[2]);
        switch (args[0]) {
            case "consume" -> consume(registry, args[3], args[4], args[5]);
            case "provide" -> provide(registry, args[3]);
            default -> throw new IllegalArgumentException("unknown mode " + args[0]);
        }
        registry.destroy();
        System.exit(0);
    }

    /**
     * reference CONNECT ROOT INTERFACE GROUP VERSION: a real Dubbo 2.7 consumer (generic
     * ReferenceConfig, ZooKeeper registry and config center, check=false, lazy, JDK proxy);
     * prints its RegistryDirectory's invoker URLs on change, as DubboClient's mode of that name.
     */
    private static void reference(String connect, String root, String iface, String group, String version)
            throws Exception {
        System.setProperty("dubbo.application.migration.step", "FORCE_INTERFACE");
        String address = "zookeeper://" + connect.split(",")[0];
        ApplicationConfig app = new ApplicationConfig("podkeeper-consumer-27");
        app.setQosEnable(false);
        RegistryConfig registry = new RegistryConfig(address);
        registry.setGroup(root);
        registry.setTimeout(20000);
        ConfigCenterConfig configCenter = new ConfigCenterConfig();
        configCenter.setAddress(address);
        configCenter.setTimeout(20000L);
        ReferenceConfig<GenericService> ref = new ReferenceConfig<>();
        ref.setInterface(iface);
        ref.setGeneric("true");
        ref.setCheck(false);
        ref.setLazy(true);
        ref.setProxy("jdk");
        if (!group.equals("-")) {
            ref.setGroup(group);
        }
        if (!version.equals("-")) {
            ref.setVersion(version);
        }
        DubboBootstrap bootstrap = DubboBootstrap.getInstance()
                .application(app)
                .registry(registry)
                .configCenter(configCenter)
                .reference(ref)
                .start();
        ref.get();
        // Package-private in 2.7.
        Method getInvoker = ReferenceConfig.class.getDeclaredMethod("getInvoker");
        getInvoker.setAccessible(true);
        Thread stdin = new Thread(() -> {
            try {
                drainStdin();
            } catch (Exception e) {
                // closed
            }
        });
        stdin.setDaemon(true);
        stdin.start();
        String last = null;
        while (stdin.isAlive()) {
            String line = invokersLine((Invoker<?>) getInvoker.invoke(ref));
            if (!line.equals(last)) {
                System.out.println(line);
                System.out.flush();
                last = line;
            }
            Thread.sleep(200);
        }
        bootstrap.stop();
    }

    private static String invokersLine(Invoker<?> invoker) {
        if (invoker instanceof MigrationInvoker<?> migration) {
            invoker = migration.getInvoker();
        }
        List<URL> urls = new ArrayList<>();
        if (invoker instanceof ClusterInvoker<?> cluster) {
            for (Invoker<?> i : cluster.getDirectory().getAllInvokers()) {
                urls.add(i.getUrl());
            }
        }
        urls.sort(Comparator.comparing(URL::getAddress));
        StringBuilder line = new StringBuilder("{\"invokers\":[");
        for (int i = 0; i < urls.size(); i++) {
            URL u = urls.get(i);
            if (i > 0) {
                line.append(',');
            }
            line.append('{');
            field(line, "address", u.getAddress()).append(',');
            line.append("\"weight\":").append(u.getParameter("weight", 100)).append(',');
            field(line, "loadbalance", u.getParameter("loadbalance"));
            line.append('}');
        }
        line.append("],");
        // What AbstractClusterInvoker.initLoadBalance picks: the first invoker's method parameter.
        String name = urls.isEmpty() ? null : urls.get(0).getMethodParameter("sayHello", "loadbalance", "random");
        field(line, "loadbalance", name).append(',');
        String cls = name == null
                ? null
                : ExtensionLoader.getExtensionLoader(LoadBalance.class)
                        .getExtension(name)
                        .getClass()
                        .getSimpleName();
        field(line, "class", cls);
        return line.append('}').toString();
    }

    private static Registry registry(String connect, String root) {
        URL url = URL.valueOf("zookeeper://" + connect.split(",")[0] + "?group=" + root + "&timeout=20000");
        ZookeeperRegistryFactory factory = new ZookeeperRegistryFactory();
        factory.setZookeeperTransporter(new CuratorZookeeperTransporter());
        return factory.createRegistry(url);
    }

    private static void consume(Registry registry, String iface, String group, String version) throws Exception {
        StringBuilder q = new StringBuilder("consumer://127.0.0.1/")
                .append(iface)
                .append("?interface=")
                .append(iface)
                .append("&category=providers&side=consumer&check=false");
        if (!group.equals("-")) {
            q.append("&group=").append(group);
        }
        if (!version.equals("-")) {
            q.append("&version=").append(version);
        }
        URL consumer = URL.valueOf(q.toString());
        Object lock = new Object();
        NotifyListener listener = urls -> {
            synchronized (lock) {
                List<URL> providers = new ArrayList<>();
                for (URL u : urls) {
                    if (!"empty".equals(u.getProtocol())) {
                        providers.add(u);
                    }
                }
                providers.sort(Comparator.comparing(URL::getAddress));
                StringBuilder line = new StringBuilder("{\"providers\":[");
                for (int i = 0; i < providers.size(); i++) {
                    URL u = providers.get(i);
                    if (i > 0) {
                        line.append(',');
                    }
                    line.append('{');
                    field(line, "protocol", u.getProtocol()).append(',');
                    field(line, "host", u.getHost()).append(',');
                    line.append("\"port\":").append(u.getPort()).append(',');
                    line.append("\"weight\":").append(u.getParameter("weight", 100)).append(',');
                    field(line, "group", u.getParameter("group")).append(',');
                    field(line, "version", u.getParameter("version")).append(',');
                    field(line, "timestamp", u.getParameter("timestamp")).append(',');
                    field(line, "warmup", u.getParameter("warmup")).append(',');
                    field(line, "zone", u.getParameter("podkeeper.zone")).append(',');
                    field(line, "owner", u.getParameter("podkeeper.owner"));
                    line.append('}');
                }
                line.append("]}");
                System.out.println(line);
                System.out.flush();
            }
        };
        registry.subscribe(consumer, listener);
        drainStdin();
        registry.unsubscribe(consumer, listener);
    }

    private static void provide(Registry registry, String providerUrl) throws Exception {
        URL url = URL.valueOf(providerUrl);
        registry.register(url);
        StringBuilder line = new StringBuilder("{");
        field(line, "registered", url.toFullString()).append('}');
        System.out.println(line);
        System.out.flush();
        drainStdin();
        registry.unregister(url);
    }

    private static StringBuilder field(StringBuilder b, String key, String value) {
        b.append('"').append(key).append("\":");
        if (value == null) {
            return b.append("null");
        }
        b.append('"');
        for (char c : value.toCharArray()) {
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"');
    }

    private static void drainStdin() throws Exception {
        while (System.in.read() != -1) {
            // until the test closes our stdin
        }
    }
}

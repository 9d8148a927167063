from nodelocaldns.cli import main

raise SystemExit(main())

from stdyn.cli import main

raise SystemExit(main())
